/**
 * @module
 * An Upstash-REST-compatible gateway in front of a real redis-server, like SRH
 * (`serverless-redis-http`) in compose.yaml, following ../shared/reference/upstash-rest.md:
 * `POST /` one command, `POST /pipeline`, `POST /multi-exec`, Bearer auth, base64 response
 * encoding on request, `{"result"}` / `{"error"}` bodies, 500 when Redis is down. RESP is
 * spoken by ioredis, not by hand.
 */
import { Redis as IORedis } from "ioredis";
import { freePort } from "../../demo/free_port.ts";

type Command = (string | number)[];
type Reply = null | number | string | Reply[];

export class UpstashGateway {
  readonly url: string;
  readonly token = crypto.randomUUID();
  readonly #redis: IORedis;
  readonly #server: Deno.HttpServer;

  /** Starts the gateway once its Redis connection is up. */
  static async start(redisPort: number): Promise<UpstashGateway> {
    const gateway = new UpstashGateway(redisPort);
    await gateway.#ready();
    return gateway;
  }

  #ready(): Promise<void> {
    if (this.#redis.status === "ready") return Promise.resolve();
    return new Promise((resolve) => this.#redis.once("ready", () => resolve()));
  }

  private constructor(redisPort: number) {
    this.#redis = new IORedis({
      port: redisPort,
      host: "127.0.0.1",
      // Like SRH: a request while Redis is down fails at once (500) instead of queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => 50,
    });
    this.#redis.on("error", () => {});
    const port = freePort();
    this.url = `http://127.0.0.1:${port}`;
    this.#server = Deno.serve(
      { port, hostname: "127.0.0.1", onListen: () => {} },
      (req) => this.#handle(req),
    );
  }

  async #handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/") {
      return Response.json("Welcome to Serverless Redis HTTP!");
    }
    if (req.headers.get("authorization") !== `Bearer ${this.token}`) {
      return Response.json({ error: "Unauthorized" }, { status: 401 });
    }
    if (req.headers.get("content-type") !== "application/json") {
      return Response.json({ error: "Invalid content type. Expected application/json." }, {
        status: 400,
      });
    }
    const base64 = req.headers.get("upstash-encoding") === "base64";
    const body = await req.json() as Command | Command[];
    if (this.#redis.status !== "ready") {
      return Response.json({ error: "SRH: Unable to connect to the Redis server." }, {
        status: 500,
      });
    }
    const encode = (reply: Reply) => base64 ? toBase64(reply) : reply;
    try {
      if (path === "/") {
        const [name, ...args] = body as Command;
        return Response.json({ result: encode(await this.#call(name, args)) });
      }
      if (path === "/pipeline") {
        const items = await Promise.all((body as Command[]).map(async ([name, ...args]) => {
          try {
            return { result: encode(await this.#call(name, args)) };
          } catch (err) {
            return { error: (err as Error).message };
          }
        }));
        return Response.json(items);
      }
      if (path === "/multi-exec") {
        const replies = await this.#redis.multi(
          (body as Command[]).map(([name, ...args]) => ["call", String(name), ...args]),
        ).exec();
        return Response.json(
          (replies ?? []).map(([err, result]) =>
            err ? { error: err.message } : { result: encode(result as Reply) }
          ),
        );
      }
    } catch (err) {
      const message = (err as Error).message;
      const down = /Stream isn't writeable|Connection is closed|ECONNREFUSED/.test(message);
      return Response.json(
        { error: down ? `SRH: Unable to connect to the Redis server. ${message}` : message },
        { status: down ? 500 : 400 },
      );
    }
    return Response.json({ error: "SRH: Endpoint not found." }, { status: 404 });
  }

  /** One command, its reply as Redis sent it (ioredis turns HGETALL into an object). */
  async #call(name: string | number, args: (string | number)[]): Promise<Reply> {
    const reply = await this.#redis.call(String(name), ...args);
    if (reply !== null && typeof reply === "object" && !Array.isArray(reply)) {
      return Object.entries(reply).flat() as Reply;
    }
    return reply as Reply;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
    this.#redis.disconnect();
  }
}

function toBase64(reply: Reply): Reply {
  if (typeof reply === "string") return new TextEncoder().encode(reply).toBase64();
  if (Array.isArray(reply)) return reply.map(toBase64);
  return reply;
}
