import * as http from "node:http";

/**
 * A minimal JSON client on node:http with keep-alive: the lightest client Node has, so that the
 * latency the benchmark reports is the server's and not the client library's.
 */
export class JsonClient {
  private readonly agent: http.Agent;

  constructor(
    private readonly baseUrl: URL,
    { maxSockets = 256 }: { maxSockets?: number } = {},
  ) {
    if (baseUrl.hostname !== "127.0.0.1") {
      throw new Error(`the benchmark only talks to 127.0.0.1 (got ${baseUrl.hostname})`);
    }
    this.agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  /** Sends a request and resolves with the status and the parsed JSON body (or the raw text). */
  request(
    method: "GET" | "POST",
    path: string,
    body?: unknown,
    timeoutMs = 60_000,
  ): Promise<{ status: number; body: unknown }> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: this.baseUrl.hostname,
          port: this.baseUrl.port,
          path,
          method,
          agent: this.agent,
          headers:
            payload === undefined
              ? {}
              : {
                  "content-type": "application/json",
                  "content-length": Buffer.byteLength(payload),
                },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: unknown = text;
            if ((res.headers["content-type"] ?? "").includes("json") && text !== "") {
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = text;
              }
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** Like {@link request}, but fails unless the status is one of `expected`. */
  async expect(
    expected: readonly number[],
    method: "GET" | "POST",
    path: string,
    body?: unknown,
    timeoutMs?: number,
  ): Promise<unknown> {
    const res = await this.request(method, path, body, timeoutMs);
    if (!expected.includes(res.status)) {
      const detail = typeof res.body === "string" ? res.body : JSON.stringify(res.body);
      throw new Error(`${method} ${path} answered ${res.status}: ${detail.slice(0, 300)}`);
    }
    return res.body;
  }

  close(): void {
    this.agent.destroy();
  }
}
