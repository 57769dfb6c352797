/**
 * @module
 * Docker Engine REST API over its unix socket with `fetch` (no CLI). `DockerApi` is the
 * transport with version negotiation; `dockerForContainers()` is the only face the proxy
 * uses, and it refuses any container name that is not in config.yml.
 *
 * Over 350 lines on purpose: the face's calls (and its filtered event stream, reopened when the
 * allowed names change) are thin over the transport, and apart they would share its internals.
 */
import { messageOf } from "./errors.ts";
import { z } from "zod";
import { splitLines } from "./text_lines.ts";

/** Newest API version whose fields this client was written against. */
const PREFERRED_API = [1, 47] as const;

export class DockerUnavailableError extends Error {
  constructor(socketPath: string, cause: unknown) {
    super(
      `Docker is unreachable at ${socketPath} (${messageOf(cause)}); is dockerd running?`,
      { cause },
    );
    this.name = "DockerUnavailableError";
  }
}

export class ContainerNotFoundError extends Error {
  constructor(readonly container: string) {
    super(`Container not found: ${container}`);
    this.name = "ContainerNotFoundError";
  }
}

/** Docker answered, but with an error (e.g. "port is already allocated"). */
export class DockerApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "DockerApiError";
  }
}

const ErrorBody = z.object({ message: z.string() });

const InspectBody = z.object({
  Name: z.string(),
  /** The image's id (sha256:…): which build runs. */
  Image: z.string().default(""),
  State: z.object({
    Status: z.string(),
    Running: z.boolean(),
    ExitCode: z.number(),
    OOMKilled: z.boolean().default(false),
    Error: z.string().default(""),
    StartedAt: z.string().default(""),
  }),
  Config: z.object({
    Tty: z.boolean().default(false),
    Labels: z.record(z.string(), z.string()).nullable().default({}),
  }).default({ Tty: false, Labels: {} }),
});

const ListBody = z.array(
  z.object({ Names: z.array(z.string()).default([]), State: z.string().default("") }),
);

const VersionBody = z.object({ ApiVersion: z.string(), MinAPIVersion: z.string().optional() });

export interface ContainerState {
  name: string;
  /** created | running | paused | restarting | removing | exited | dead */
  status: string;
  running: boolean;
  exitCode: number;
  oomKilled: boolean;
  error: string;
  startedAt: string;
  labels: Record<string, string>;
  /** The image id it was created from. */
  image: string;
}

export interface ContainerEvent {
  /** start | die | stop */
  action: string;
  name: string;
}

const EventLine = z.object({
  Action: z.string(),
  Actor: z.object({ Attributes: z.record(z.string(), z.string()).default({}) }),
});

export interface ContainerSummary {
  name: string;
  running: boolean;
}

export interface RequestOptions {
  body?: BodyInit;
  json?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

function parseVersion(text: string): [number, number] {
  const [major, minor] = text.split(".").map(Number);
  return [major || 1, minor || 0];
}

function compareVersion(a: readonly number[], b: readonly number[]): number {
  return a[0] - b[0] || a[1] - b[1];
}

/** Raw Engine API transport; every path gets the negotiated `/vX.Y` prefix. */
export class DockerApi {
  readonly socketPath: string;
  #client: Deno.HttpClient;
  #version: Promise<string> | null = null;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
    this.#client = Deno.createHttpClient({ proxy: { transport: "unix", path: socketPath } });
  }

  /**
   * Sends one request and returns the response whatever its status.
   * @throws {DockerUnavailableError} when the socket cannot be reached.
   */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const version = await this.#negotiate();
    return this.#send(method, `/v${version}${path}`, options);
  }

  /** Like `request()`, but non-2xx/304 answers become `DockerApiError` or `ContainerNotFoundError`. */
  async call(
    method: string,
    path: string,
    options: RequestOptions & { container?: string } = {},
  ): Promise<Response> {
    const res = await this.request(method, path, options);
    if (res.ok || res.status === 304) return res;
    const text = await res.text();
    const parsed = ErrorBody.safeParse(safeJson(text));
    const message = parsed.success ? parsed.data.message : text || res.statusText;
    if (res.status === 404 && options.container && /no such container/i.test(message)) {
      throw new ContainerNotFoundError(options.container);
    }
    throw new DockerApiError(res.status, message);
  }

  /** Checks the daemon answers; also (re)negotiates the API version. */
  async ping(signal?: AbortSignal): Promise<void> {
    this.#version = null;
    await this.#negotiate(signal);
  }

  close(): void {
    this.#client.close();
  }

  #negotiate(signal?: AbortSignal): Promise<string> {
    if (this.#version === null) {
      const attempt = this.#fetchVersion(signal);
      this.#version = attempt;
      // A failed negotiation must not stick: the daemon may come back.
      attempt.catch(() => {
        if (this.#version === attempt) this.#version = null;
      });
    }
    return this.#version;
  }

  async #fetchVersion(signal?: AbortSignal): Promise<string> {
    const res = await this.#send("GET", "/version", { signal });
    if (!res.ok) throw new DockerApiError(res.status, await res.text());
    const body = VersionBody.parse(await res.json());
    const max = parseVersion(body.ApiVersion);
    const min = parseVersion(body.MinAPIVersion ?? "1.24");
    let chosen: readonly number[] = compareVersion(PREFERRED_API, max) < 0 ? PREFERRED_API : max;
    if (compareVersion(chosen, min) < 0) chosen = min;
    return `${chosen[0]}.${chosen[1]}`;
  }

  async #send(method: string, path: string, options: RequestOptions): Promise<Response> {
    const headers: Record<string, string> = { ...options.headers };
    let body = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    try {
      return await fetch(`http://docker${path}`, {
        method,
        headers,
        body,
        signal: options.signal,
        client: this.#client,
      });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      throw new DockerUnavailableError(this.socketPath, err);
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** What the model manager needs from Docker, limited to the containers named in config. */
export interface Docker {
  ping(signal?: AbortSignal): Promise<void>;
  inspect(name: string): Promise<ContainerState>;
  start(name: string): Promise<void>;
  stop(name: string, graceS: number): Promise<void>;
  logTail(name: string, lines: number): Promise<string>;
  /** The allowed containers that exist, running or not. */
  list(): Promise<ContainerSummary[]>;
  /** Creates a container from a `POST /containers/create` body. */
  create(name: string, body: unknown): Promise<void>;
  /** Removes a stopped container (force: a running one too). */
  remove(name: string, force?: boolean): Promise<void>;
  /** Replaces the containers this face may touch (config reload). */
  allow(names: Iterable<string>): void;
  /** Start/stop events of the allowed containers, as they happen, until `signal` aborts. */
  events(signal: AbortSignal): AsyncIterable<ContainerEvent>;
}

/**
 * Builds the restricted Docker face. Names outside `allowed` throw before any request.
 */
export function dockerForContainers(api: DockerApi, allowed: Iterable<string>): Docker {
  let names = new Set(allowed);
  /** Open event streams: each is told when the names change, as its filter names them. */
  const renamed = new Set<(at: number) => void>();
  const path = (name: string, rest: string) => {
    if (!names.has(name)) {
      throw new Error(`Refusing to touch container '${name}': it is not named in the config`);
    }
    return `/containers/${encodeURIComponent(name)}${rest}`;
  };
  const drain = async (res: Response) => void await res.body?.cancel();

  return {
    ping: (signal) => api.ping(signal),

    allow(allowed) {
      const next = new Set(allowed);
      if (next.size === names.size && [...next].every((name) => names.has(name))) return;
      names = next;
      const at = Date.now();
      for (const reopen of renamed) reopen(at);
    },

    async inspect(name) {
      const res = await api.call("GET", path(name, "/json"), { container: name });
      const body = InspectBody.parse(await res.json());
      const s = body.State;
      return {
        name,
        status: s.Status,
        running: s.Running,
        exitCode: s.ExitCode,
        oomKilled: s.OOMKilled,
        error: s.Error,
        startedAt: s.StartedAt,
        labels: body.Config.Labels ?? {},
        image: body.Image,
      };
    },

    async create(name, body) {
      path(name, ""); // refuses names outside the config
      const query = `/containers/create?name=${encodeURIComponent(name)}`;
      await drain(await api.call("POST", query, { json: body }));
    },

    async remove(name, force = false) {
      await drain(
        await api.call("DELETE", path(name, `?force=${force ? 1 : 0}`), { container: name }),
      );
    },

    async start(name) {
      await drain(await api.call("POST", path(name, "/start"), { container: name }));
    },

    async stop(name, graceS) {
      const target = path(name, `/stop?t=${Math.max(0, Math.floor(graceS))}`);
      await drain(await api.call("POST", target, { container: name }));
    },

    async logTail(name, lines) {
      const inspect = await api.call("GET", path(name, "/json"), { container: name });
      const tty = InspectBody.parse(await inspect.json()).Config.Tty;
      const query = `/logs?stdout=1&stderr=1&tail=${Math.max(1, Math.floor(lines))}`;
      const res = await api.call("GET", path(name, query), { container: name });
      const bytes = new Uint8Array(await res.arrayBuffer());
      return tty ? new TextDecoder().decode(bytes) : demuxLogs(bytes);
    },

    /**
     * Docker filters by name (a prefix match: the exact match is ours), so that the starts
     * and stops of every other container on the machine cost this process nothing: parsing
     * each took ~0.5 ms, and a host where tests or other services churn containers a few
     * times a second doubled an idle proxy's CPU. A change of names reopens the stream with
     * the new filter, from the moment of the change (`since`), so no event falls in between.
     */
    async *events(signal) {
      let since: number | null = null;
      while (!signal.aborted) {
        const reopen = new AbortController();
        let changedAt = 0;
        const onRename = (at: number) => {
          changedAt = at;
          reopen.abort();
        };
        renamed.add(onRename);
        let opened = false;
        try {
          const filters = encodeURIComponent(JSON.stringify({
            type: ["container"],
            event: ["start", "die", "stop"],
            container: [...names],
          }));
          const from = since === null ? "" : `&since=${(since / 1000).toFixed(3)}`;
          const res = await api.call("GET", `/events?filters=${filters}${from}`, {
            signal: AbortSignal.any([signal, reopen.signal]),
          });
          opened = true;
          // Chunks do not line up with events: one event per line.
          const lines = res.body!.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines());
          for await (const line of lines) {
            if (reopen.signal.aborted) break;
            const parsed = EventLine.safeParse(safeJson(line));
            const name = parsed.success ? parsed.data.Actor.Attributes.name : undefined;
            if (parsed.success && name !== undefined && names.has(name)) {
              yield { action: parsed.data.Action, name };
            }
          }
          if (!reopen.signal.aborted) return; // Docker ended the stream
        } catch (err) {
          if (signal.aborted || !reopen.signal.aborted) throw err;
        } finally {
          renamed.delete(onRename);
        }
        // Renamed again before Docker answered: the earlier moment still bounds the gap.
        if (opened || since === null) since = changedAt;
      }
    },

    async list() {
      const res = await api.call("GET", "/containers/json?all=1");
      return ListBody.parse(await res.json()).flatMap((c) =>
        c.Names.map((n) => ({ name: n.replace(/^\//, ""), running: c.State === "running" }))
      ).filter((c) => names.has(c.name));
    },
  };
}

/** Joins the payloads of Docker's multiplexed log frames (8-byte header, then payload). */
export function demuxLogs(bytes: Uint8Array): string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const parts: Uint8Array[] = [];
  let offset = 0;
  while (offset + 8 <= bytes.length) {
    const size = view.getUint32(offset + 4);
    parts.push(bytes.subarray(offset + 8, Math.min(bytes.length, offset + 8 + size)));
    offset += 8 + size;
  }
  const decoder = new TextDecoder();
  return parts.map((p) => decoder.decode(p)).join("");
}
