/**
 * @module
 * An Upstash-REST-compatible gateway in front of a real redis-server, like SRH
 * (`serverless-redis-http`) in compose.yaml, following ../shared/reference/upstash-rest.md:
 * `POST /` one command, `POST /pipeline`, `POST /multi-exec`, Bearer auth, base64 response
 * encoding on request, `{"result"}` / `{"error"}` bodies, 500 when Redis is down. RESP is
 * spoken by ioredis, not by hand.
 *
 * It runs in a process of its own, as SRH does beside a real deployment. In the test runner's
 * process, every pause of the runner (a collection, Docker API work, another test's client)
 * held every node's store calls and heartbeats, and a cluster test once saw a live peer's
 * lease run out.
 */
import { Redis as IORedis } from "ioredis";
import { freePort } from "../../demo/free_port.ts";
import { type WatchedProcess, watchOutput } from "./process_output.ts";
import { waitFor } from "./wait_for.ts";

type Command = (string | number)[];
type Reply = null | number | string | Reply[];

/** What the gateway process prints once Redis is connected and it listens. */
const READY = "gateway ready\n";

/** The gateway process: its address and token, and a way to stop it. */
export class UpstashGateway {
  readonly url: string;
  readonly token: string;
  readonly #proc: WatchedProcess;

  private constructor(url: string, token: string, proc: WatchedProcess) {
    this.url = url;
    this.token = token;
    this.#proc = proc;
  }

  /** Starts the gateway on a free port once its Redis connection is up. */
  static async start(redisPort: number): Promise<UpstashGateway> {
    const port = freePort();
    const token = crypto.randomUUID();
    const proc = watchOutput(
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-net",
          "--allow-env",
          "--allow-read",
          `--config=${new URL("../../deno.json", import.meta.url).pathname}`,
          new URL(import.meta.url).pathname,
          String(redisPort),
          String(port),
          token,
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    try {
      await waitFor("the Upstash gateway to start", () => proc.output.includes(READY));
    } catch (err) {
      await proc[Symbol.asyncDispose]();
      throw new Error(`${err}\n${proc.output}`);
    }
    return new UpstashGateway(`http://127.0.0.1:${port}`, token, proc);
  }

  /**
   * Makes the next `times` calls of `command` on a key that holds `keyPart` fail as a gateway
   * that lost Redis does (500), whatever other calls come between: a store blip at one read.
   */
  async failNext(command: string, keyPart: string, times: number): Promise<void> {
    const res = await this.#control("POST", { command, keyPart, times });
    if (!res.ok) throw new Error(`the gateway did not take the fault: ${res.status}`);
  }

  /** How many of the calls `failNext` asked to fail are still to come. */
  async failuresLeft(): Promise<number> {
    return (await (await this.#control("GET")).json()).left;
  }

  #control(method: string, body?: unknown): Promise<Response> {
    return fetch(`${this.url}${FAULT_PATH}`, {
      method,
      headers: { authorization: `Bearer ${this.token}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#proc[Symbol.asyncDispose]();
  }
}

/** The gateway's own path for the faults tests ask of it (not Upstash's). */
const FAULT_PATH = "/_test/fault";

interface Fault {
  command: string;
  keyPart: string;
  left: number;
}

class Gateway {
  readonly #token: string;
  readonly #redis: IORedis;
  #fault: Fault | null = null;

  constructor(redisPort: number, port: number, token: string) {
    this.#token = token;
    this.#redis = new IORedis({
      port: redisPort,
      host: "127.0.0.1",
      // Like SRH: a request while Redis is down fails at once (500) instead of queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => 50,
    });
    this.#redis.on("error", () => {});
    Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, (req) => this.#handle(req));
  }

  ready(): Promise<void> {
    if (this.#redis.status === "ready") return Promise.resolve();
    return new Promise((resolve) => this.#redis.once("ready", () => resolve()));
  }

  async #handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/") {
      return Response.json("Welcome to Serverless Redis HTTP!");
    }
    if (req.headers.get("authorization") !== `Bearer ${this.#token}`) {
      return Response.json({ error: "Unauthorized" }, { status: 401 });
    }
    if (path === FAULT_PATH) {
      if (req.method === "POST") {
        const { command, keyPart, times } = await req.json();
        this.#fault = { command: command.toUpperCase(), keyPart, left: times };
      }
      return Response.json({ left: this.#fault?.left ?? 0 });
    }
    if (req.headers.get("content-type") !== "application/json") {
      return Response.json({ error: "Invalid content type. Expected application/json." }, {
        status: 400,
      });
    }
    const base64 = req.headers.get("upstash-encoding") === "base64";
    const body = await req.json() as Command | Command[];
    if (this.#redis.status !== "ready") {
      return redisDown();
    }
    const encode = (reply: Reply) => base64 ? toBase64(reply) : reply;
    try {
      if (path === "/") {
        const [name, ...args] = body as Command;
        if (this.#faulted(name, args)) {
          return redisDown();
        }
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

  /** Whether this call is one the fault asked to fail (and counts it). */
  #faulted(name: string | number, args: (string | number)[]): boolean {
    const fault = this.#fault;
    if (fault === null || fault.left === 0 || String(name).toUpperCase() !== fault.command) {
      return false;
    }
    if (!String(args[0] ?? "").includes(fault.keyPart)) return false;
    fault.left--;
    return true;
  }

  /** One command, its reply as Redis sent it (ioredis turns HGETALL into an object). */
  async #call(name: string | number, args: (string | number)[]): Promise<Reply> {
    const reply = await this.#redis.call(String(name), ...args);
    if (reply !== null && typeof reply === "object" && !Array.isArray(reply)) {
      return Object.entries(reply).flat() as Reply;
    }
    return reply as Reply;
  }
}

/** What SRH answers while it cannot reach Redis. */
function redisDown(): Response {
  return Response.json({ error: "SRH: Unable to connect to the Redis server." }, { status: 500 });
}

function toBase64(reply: Reply): Reply {
  if (typeof reply === "string") return new TextEncoder().encode(reply).toBase64();
  if (Array.isArray(reply)) return reply.map(toBase64);
  return reply;
}

if (import.meta.main) {
  const [redisPort, port, token] = Deno.args;
  await new Gateway(Number(redisPort), Number(port), token).ready();
  await Deno.stdout.write(new TextEncoder().encode(READY));
}
