import * as http from "node:http";
import * as net from "node:net";

/** A backend of the {@link LoadBalancer}: a port on 127.0.0.1 and whether it is in rotation. */
interface Backend {
  name: string;
  port: number;
  /** Its last /readyz answered 200 and its port has not refused a connection since. */
  ready: boolean;
  /** Connections handed to it, for reports. */
  connections: number;
  probing: boolean;
}

export interface LoadBalancerOptions {
  /** How often each backend's /readyz is asked (a kubelet's periodSeconds, scaled down). */
  probeIntervalMs?: number;
  /** A /readyz that takes longer than this counts as failed. */
  probeTimeoutMs?: number;
}

/**
 * A TCP load balancer on 127.0.0.1 that behaves like a Kubernetes Service in front of the masters:
 * each new connection goes to the next ready backend in turn and stays with it for its life. A
 * backend is in rotation only while its `/readyz` answers 200 (probed every `probeIntervalMs`, as
 * the kubelet's readiness probe feeds the Service's endpoints); one whose port refuses a
 * connection leaves the rotation at once, and that connection is tried on the next ready backend
 * (no byte has been sent yet, so nothing can be doubled). A connection already open to a backend
 * that dies is cut, as it would be in a cluster.
 */
export class LoadBalancer {
  private readonly backends = new Map<string, Backend>();
  private readonly sockets = new Set<net.Socket>();
  /** Connections handed to backends since removed, by name. */
  private readonly removed = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private next = 0;
  /** Connections that found no ready backend and were closed at once. */
  refused = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly probeTimeoutMs: number,
    probeIntervalMs: number,
  ) {
    this.timer = setInterval(() => {
      for (const backend of this.backends.values()) void this.probe(backend);
    }, probeIntervalMs);
  }

  static async start(options: LoadBalancerOptions = {}): Promise<LoadBalancer> {
    let balancer: LoadBalancer | undefined;
    const server = net.createServer((client) => balancer?.accept(client));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as net.AddressInfo;
    balancer = new LoadBalancer(
      server,
      port,
      options.probeTimeoutMs ?? 500,
      options.probeIntervalMs ?? 100,
    );
    return balancer;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Adds a backend; it takes connections once its first /readyz answers 200. */
  add(name: string, port: number): void {
    const backend: Backend = { name, port, ready: false, connections: 0, probing: false };
    this.backends.set(name, backend);
    void this.probe(backend);
  }

  /** Takes a backend out for good (the pod is gone); its open connections are left alone. */
  remove(name: string): void {
    const backend = this.backends.get(name);
    if (backend !== undefined) this.removed.set(name, backend.connections);
    this.backends.delete(name);
  }

  /** The names of the backends in rotation now. */
  inRotation(): string[] {
    return [...this.backends.values()].filter((b) => b.ready).map((b) => b.name);
  }

  /** Connections each backend was handed, by name, removed backends included. */
  connectionCounts(): Record<string, number> {
    return {
      ...Object.fromEntries(this.removed),
      ...Object.fromEntries([...this.backends.values()].map((b) => [b.name, b.connections])),
    };
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async probe(backend: Backend): Promise<void> {
    if (backend.probing) return;
    backend.probing = true;
    try {
      const status = await new Promise<number>((resolve) => {
        const request = http.get(
          { host: "127.0.0.1", port: backend.port, path: "/readyz", agent: false },
          (response) => {
            response.resume();
            response.on("end", () => resolve(response.statusCode ?? 0));
            response.on("error", () => resolve(0));
          },
        );
        request.setTimeout(this.probeTimeoutMs, () => request.destroy());
        request.on("error", () => resolve(0));
      });
      backend.ready = status === 200 && this.backends.get(backend.name) === backend;
    } finally {
      backend.probing = false;
    }
  }

  /** The ready backends, starting from the next in turn. */
  private candidates(): Backend[] {
    const ready = [...this.backends.values()].filter((b) => b.ready);
    if (ready.length === 0) return [];
    const start = this.next++ % ready.length;
    return [...ready.slice(start), ...ready.slice(0, start)];
  }

  private accept(client: net.Socket): void {
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client));
    client.on("error", () => client.destroy());
    // Whatever the client sends before the backend connects waits in the socket's buffer.
    client.pause();
    this.connect(client, this.candidates());
  }

  private connect(client: net.Socket, candidates: Backend[]): void {
    const backend = candidates.shift();
    if (backend === undefined || client.destroyed) {
      this.refused++;
      client.destroy();
      return;
    }
    const upstream = net.connect(backend.port, "127.0.0.1");
    this.sockets.add(upstream);
    upstream.on("close", () => this.sockets.delete(upstream));
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
      backend.connections++;
      upstream.pipe(client);
      client.pipe(upstream);
      client.resume();
    });
    upstream.on("error", (error: NodeJS.ErrnoException) => {
      if (!connected && error.code === "ECONNREFUSED") {
        // The port is closed: the process is gone or has stopped listening.
        backend.ready = false;
        this.connect(client, candidates);
        return;
      }
      client.destroy();
    });
    // A reset from the backend reaches the client as a reset; a clean close as a clean close,
    // after what the backend sent has been written.
    upstream.on("close", (hadError) => {
      if (!connected) return;
      if (hadError) client.destroy();
      else client.end();
    });
    client.on("close", () => upstream.destroy());
  }
}
