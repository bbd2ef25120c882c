import type { Server as HttpServer } from "node:http";
import { createServer, type Server as NetServer, type Socket } from "node:net";

/**
 * Which of the master's two ports serves a path once INTERNAL_PORT is set: the client API on the
 * public port (behind the load balancer), the worker API, the autoscaler's backlog and the metrics
 * on the internal one (reached only from inside the cluster), health on both.
 */
export type Exposure = "public" | "internal" | "both";

export function exposureOf(path: string): Exposure {
  if (path === "/v1" || path.startsWith("/v1/")) return "public";
  if (path === "/worker" || path.startsWith("/worker/") || path === "/metrics") return "internal";
  if (path === "/scaler" || path.startsWith("/scaler/")) return "internal";
  return "both";
}

/** Why a request for `path` is answered 404 on the port it came in on. */
export function wrongPortMessage(method: string, path: string, exposure: Exposure): string {
  return `no route for ${method} ${path} on this port; the ${exposure === "public" ? "client API is served on the master's public port" : "worker API, the scaler's backlog and /metrics are served on the master's internal port"}`;
}

/**
 * The internal port: a second listening socket whose connections are handed to the master's one
 * HTTP server, so both ports share its routes, timeouts, error handling and shutdown, and the
 * server can tell by its socket which port a request came in on. It has its own connection cap:
 * a flood of connections to the public port cannot lock workers and the kubelet's probes out.
 */
export class InternalListener {
  private readonly listener: NetServer;
  private readonly sockets = new WeakSet<Socket>();

  constructor(server: HttpServer, maxConnections: number) {
    this.listener = createServer((socket) => {
      this.sockets.add(socket);
      server.emit("connection", socket);
    });
    this.listener.maxConnections = maxConnections;
  }

  /** True for a request's socket accepted by this listener. */
  accepted(socket: Socket): boolean {
    return this.sockets.has(socket);
  }

  /** Starts listening; resolves to the port (useful with port 0). */
  async listen(port: number, host: string): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.listener.once("error", reject);
      this.listener.listen(port, host, () => {
        this.listener.off("error", reject);
        resolve();
      });
    });
    const address = this.listener.address();
    if (address === null || typeof address === "string") throw new Error("no TCP address");
    return address.port;
  }

  /**
   * Stops accepting connections. The ones open belong to the HTTP server, which closes them as
   * it closes its own.
   */
  close(): void {
    if (this.listener.listening) this.listener.close();
  }
}
