import { randomBytes } from "node:crypto";
import type { TaskResponse as TaskView } from "../../services/master/src/routes/tasks.js";
import type { TestRedis } from "../../services/master/test/redis-server.js";
import { buildServices, type FleetProcess, freePort, startWorker, until, watch } from "./fleet";
import { LoadBalancer } from "./load-balancer";

export type { TaskView };

/** A master of a {@link MultiMasterFleet}: a process and the port it listens on. */
export interface MasterProcess extends FleetProcess {
  port: number;
}

export interface MultiMasterOptions {
  /** The redis-server every master shares (STORE=redis). */
  redis: TestRedis;
  /** More master variables, for every master this fleet starts. */
  masterEnv?: Record<string, string>;
}

/**
 * Masters on one Redis (STORE=redis) behind an in-process {@link LoadBalancer}, and worker
 * processes whose MASTER_URL is the balancer, all started from the built services: a worker's
 * lease, renew and complete may each land on a different master, as behind a Kubernetes Service.
 * Masters can be killed, stopped and started (each on a new port) while work flows.
 */
export class MultiMasterFleet {
  /** Every master started, by name, including those that have exited. */
  readonly masters = new Map<string, MasterProcess>();
  readonly workers: FleetProcess[] = [];
  private nextMaster = 1;
  private nextWorker = 1;
  private readonly workerToken = randomBytes(16).toString("hex");

  private constructor(
    readonly balancer: LoadBalancer,
    private readonly options: MultiMasterOptions,
  ) {}

  /** Builds the services if needed and starts the balancer, with no master behind it yet. */
  static async start(options: MultiMasterOptions): Promise<MultiMasterFleet> {
    buildServices();
    return new MultiMasterFleet(await LoadBalancer.start(), options);
  }

  /** Where clients and workers send their requests: the balancer. */
  get url(): string {
    return this.balancer.url;
  }

  /** Masters whose process is running. */
  live(): MasterProcess[] {
    return [...this.masters.values()].filter((master) => master.child.exitCode === null);
  }

  /**
   * Starts a master on a new port and resolves once the balancer has it in rotation (its
   * /readyz answered 200 to the balancer's own probe).
   */
  async startMaster(): Promise<MasterProcess> {
    const name = `master-${this.nextMaster++}`;
    const port = await freePort();
    const process = watch(name, "master", {
      PORT: String(port),
      HOST: "127.0.0.1",
      WORKER_TOKEN: this.workerToken,
      STORE: "redis",
      REDIS_URL: this.options.redis.url,
      LEASE_SECONDS: "2",
      RETRY_BACKOFF_MS: "20",
      // Long enough for the balancer (probing every 100 ms) to see /readyz fail before the port
      // closes, as a Service stops routing to a pod that is not ready.
      SHUTDOWN_DRAIN_SECONDS: "1",
      SHUTDOWN_GRACE_SECONDS: "15",
      LOG_LEVEL: "warn",
      ...this.options.masterEnv,
    });
    const master = { ...process, port };
    this.masters.set(name, master);
    this.balancer.add(name, port);
    await until(
      () => {
        if (master.child.exitCode !== null) {
          throw new Error(`${name} exited: ${JSON.stringify(master.logs.slice(-5))}`);
        }
        return this.balancer.inRotation().includes(name);
      },
      15_000,
      () => `${name} never became ready: ${JSON.stringify(master.logs.slice(-5))}`,
    );
    return master;
  }

  /** SIGKILL: the master dies at once, with whatever requests it was serving. */
  async killMaster(master: MasterProcess): Promise<number> {
    master.child.kill("SIGKILL");
    const code = await master.exited;
    this.balancer.remove(master.name);
    return code;
  }

  /**
   * SIGTERM, as Kubernetes stops a pod: resolves with the exit code once the master has drained
   * and exited; the balancer stops routing to it as soon as its /readyz fails.
   */
  async stopMaster(master: MasterProcess): Promise<number> {
    master.child.kill("SIGTERM");
    const code = await master.exited;
    this.balancer.remove(master.name);
    return code;
  }

  /** SIGKILL: the worker dies at once, with the leases it holds; resolves with its exit code. */
  async killWorker(worker: FleetProcess): Promise<number> {
    worker.child.kill("SIGKILL");
    return worker.exited;
  }

  /**
   * SIGSTOP: the worker freezes as a process the kernel stops scheduling does (a long GC pause, a
   * VM paused, a node swapping): it neither renews nor completes until {@link thawWorker}.
   */
  freezeWorker(worker: FleetProcess): void {
    worker.child.kill("SIGSTOP");
  }

  /** SIGCONT: a frozen worker runs on from where it stopped, its timers all overdue. */
  thawWorker(worker: FleetProcess): void {
    worker.child.kill("SIGCONT");
  }

  /** Starts a worker whose MASTER_URL is the balancer and waits until it has logged that it runs. */
  async addWorker(env: Record<string, string> = {}): Promise<FleetProcess> {
    const worker = startWorker(`worker-${this.nextWorker++}`, this.url, this.workerToken, env);
    this.workers.push(worker.process);
    await worker.started;
    return worker.process;
  }

  /** Every process still running gets SIGKILL, and the balancer closes. */
  async stop(): Promise<void> {
    const all = [...this.masters.values(), ...this.workers];
    for (const { child } of all) if (child.exitCode === null) child.kill("SIGKILL");
    await Promise.all(all.map((process) => process.exited));
    await this.balancer.close();
  }

  /**
   * How many times each task id was reported done by a worker's handler ("task done" with ok),
   * over every worker: what the handlers ran to the end.
   */
  handlerRuns(): Map<string, number> {
    const runs = new Map<string, number>();
    for (const worker of this.workers) {
      for (const line of worker.logs) {
        if (line.msg !== "task done" || line.ok !== true) continue;
        const id = String(line.taskId);
        runs.set(id, (runs.get(id) ?? 0) + 1);
      }
    }
    return runs;
  }
}

/** An answer of the master, with its status. */
export interface Answer<T> {
  status: number;
  body: T;
}

/**
 * The client API as a user's program reaches it through the balancer: it counts every answer by
 * status and every request that got no answer (a connection cut by a dying master), and retries
 * 503 answers and lost connections with the same request, which is safe for reads and for
 * submissions that carry idempotency keys. Any other answer outside 2xx is thrown.
 */
export class ApiClient {
  /** Answers by HTTP status, over every request this client made. */
  readonly statuses = new Map<number, number>();
  /** Requests that got no answer. */
  networkErrors = 0;
  /** Submissions answered 503 (each sent again until taken). */
  refusedSubmissions = 0;

  constructor(private readonly baseUrl: string) {}

  /** Answers with a status of 500 or more. */
  get serverErrors(): number {
    return [...this.statuses].filter(([s]) => s >= 500).reduce((sum, [, n]) => sum + n, 0);
  }

  count(status: number): number {
    return this.statuses.get(status) ?? 0;
  }

  /** One request, no retry: the answer, or `undefined` when the connection failed. */
  async once<T>(method: string, path: string, body?: unknown): Promise<Answer<T> | undefined> {
    let response: Response;
    let text: string;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
      text = await response.text();
    } catch {
      this.networkErrors++;
      return undefined;
    }
    this.statuses.set(response.status, this.count(response.status) + 1);
    if (response.status === 503 && method === "POST") this.refusedSubmissions++;
    return { status: response.status, body: (text === "" ? undefined : JSON.parse(text)) as T };
  }

  /**
   * Sends until the answer is neither a 503 nor a lost connection (waiting 20 ms, doubling to
   * 500 ms, between tries: far less than Retry-After, to keep tests short), then returns a 2xx
   * answer's body or throws.
   */
  async request<T>(method: string, path: string, body?: unknown, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let wait = 20;
    for (;;) {
      const answer = await this.once<T>(method, path, body);
      if (answer !== undefined && answer.status !== 503) {
        if (answer.status >= 200 && answer.status < 300) return answer.body;
        throw new Error(`${method} ${path} answered ${answer.status}: ${JSON.stringify(answer)}`);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `${method} ${path} got no 2xx in ${timeoutMs} ms (last: ${answer?.status})`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 500);
    }
  }

  /** Submits a batch whose tasks carry idempotency keys; the ids in order. */
  async submit(tasks: readonly KeyedTask[]): Promise<string[]> {
    const answer = await this.request<{ ids: string[] }>("POST", "/v1/tasks/batch", { tasks });
    return answer.ids;
  }

  task(id: string, waitSeconds = 0): Promise<TaskView> {
    const query = waitSeconds > 0 ? `?waitSeconds=${waitSeconds}` : "";
    return this.request<TaskView>("GET", `/v1/tasks/${id}${query}`);
  }

  stats(): Promise<Record<string, number>> {
    return this.request("GET", "/v1/stats");
  }

  /** A summary for messages and reports: answers by status and lost connections. */
  describe(): string {
    const statuses = [...this.statuses]
      .sort(([a], [b]) => a - b)
      .map(([status, n]) => `${status}×${n}`)
      .join(" ");
    return `${statuses}; ${this.networkErrors} without an answer`;
  }
}

/** A task as submitted, with the idempotency key that lets a lost submission be sent again. */
export interface KeyedTask {
  type: string;
  payload: unknown;
  idempotencyKey: string;
  maxAttempts?: number;
}

/** The prime-counting function pi(n - 1), from published tables: independent of the worker. */
const primesBelow: [number, number][] = [
  [1_000, 168],
  [10_000, 1_229],
  [100_000, 9_592],
];

/** How long the held tasks of {@link numberedTask} sleep: as long as a lease (LEASE_SECONDS=2). */
export const heldTaskMs = 2000;

/** Whether task `i` of {@link numberedTask} is a held task (a sleep of {@link heldTaskMs}). */
export function isHeldTask(i: number): boolean {
  return i % 200 === 113;
}

/**
 * Task `i` of a run named `run`, and the result a correct worker returns for it: mostly echoes
 * (cheap, so thousands pass in seconds), with short sleeps (so workers hold leases when a master
 * dies), prime counts checked against published values, and one task in 200 a held task that
 * sleeps as long as a lease, so that at almost any moment each worker holds one a test can wait
 * for and then kill or freeze the worker under. A held task may lose its lease more than once in
 * a run (its worker killed or frozen, a master dying with a lease answer), so it gets more
 * attempts than the default 3.
 */
export function numberedTask(run: string, i: number): { task: KeyedTask; expected: unknown } {
  const idempotencyKey = `${run}-${i}`;
  if (isHeldTask(i)) {
    return {
      task: { type: "sleep", payload: { ms: heldTaskMs }, idempotencyKey, maxAttempts: 10 },
      expected: { slept: heldTaskMs },
    };
  }
  if (i % 10 === 3) {
    const ms = 5 + (i % 40);
    return { task: { type: "sleep", payload: { ms }, idempotencyKey }, expected: { slept: ms } };
  }
  if (i % 50 === 7) {
    const [n, count] = primesBelow[i % primesBelow.length] as [number, number];
    return { task: { type: "cpu", payload: { n }, idempotencyKey }, expected: count };
  }
  const payload = { run, i, text: `task ${i}` };
  return { task: { type: "echo", payload, idempotencyKey }, expected: payload };
}
