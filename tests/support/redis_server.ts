/**
 * @module
 * A real `redis-server` per test: its own free port and temp dir, append-only on, so a
 * test can stop it and start it again on the same data. A missing binary is a failure
 * with an install hint, never a skip.
 */
import { Redis as IORedis } from "ioredis";
import { freePort } from "../../demo/free_port.ts";
import { waitFor } from "./wait_for.ts";

const HINT = "These tests need redis-server: install it with `apt-get install -y redis-server` " +
  "(`bash .ci/run` does).";

export class RedisServer {
  readonly port: number;
  readonly dir: string;
  #process: Deno.ChildProcess | null = null;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.dir = dir;
  }

  /** Starts a fresh server; throws with an install hint when redis-server is missing. */
  static async start(): Promise<RedisServer> {
    const server = new RedisServer(freePort(), await Deno.makeTempDir({ prefix: "lqp-redis-" }));
    await server.resume();
    return server;
  }

  /** Starts the server again on the same port and data (after `stop`). */
  async resume(): Promise<void> {
    let command: Deno.Command;
    try {
      command = new Deno.Command("redis-server", {
        args: [
          "--port",
          String(this.port),
          "--bind",
          "127.0.0.1",
          "--dir",
          this.dir,
          "--appendonly",
          "yes",
          "--appendfsync",
          "always",
          "--save",
          "",
        ],
        stdout: "null",
        stderr: "null",
      });
      this.#process = command.spawn();
    } catch (err) {
      throw new Error(`${HINT} (${err})`);
    }
    const client = new IORedis({
      port: this.port,
      host: "127.0.0.1",
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on("error", () => {});
    try {
      await waitFor(`redis-server on port ${this.port}`, async () => {
        if (client.status !== "ready") await client.connect();
        return await client.ping() === "PONG";
      }, { timeoutMs: 10_000 });
    } finally {
      client.disconnect();
    }
  }

  /** Stops the server (SIGTERM: the append-only file is flushed). */
  async stop(): Promise<void> {
    const process = this.#process;
    if (process === null) return;
    this.#process = null;
    process.kill("SIGTERM");
    await process.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    await Deno.remove(this.dir, { recursive: true });
  }
}
