/**
 * @module
 * config.yml: the seed's keys plus optional extensions. `parseConfig()` is pure (text in,
 * resolved config or every problem with key path and line out); `loadConfig()` does the I/O.
 */
import { messageOf } from "./errors.ts";
import { z } from "zod";
import type { ApiKeyConfig } from "./auth.ts";
import type { Config, ModelConfig } from "./config_types.ts";
import { DEVICE_PATTERN, PORT_PATTERN, VOLUME_PATTERN } from "./container_spec.ts";
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";

/** Docker's own rule for container names; it also keeps `/`, `?` and `..` out of API paths. */
const CONTAINER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

const seconds = z.number().positive();
const httpUrl = z.url({ protocol: /^https?$/, error: "expected an http:// or https:// URL" });

/** Sizes as bytes or a string like "50mb" / "512kb". */
const byteSize = z.union([
  z.number().int().positive(),
  z.string().regex(/^\s*\d+(\.\d+)?\s*(b|kb|mb|gb)?\s*$/i, 'expected bytes or a size like "50mb"')
    .transform((text) => {
      const match = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(text)!;
      const unit = (match[2] ?? "b").toLowerCase();
      const factor = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }[unit]!;
      return Math.round(Number(match[1]) * factor);
    }),
]);

const RawScheduler = z.strictObject({
  policy: z.enum(["affinity", "greedy", "fifo"]).default("affinity"),
  max_wait: seconds.default(60),
  min_residency: seconds.optional(),
  batch_aging: seconds.default(600),
});

const stringMap = z.record(
  z.string().min(1),
  z.union([z.string(), z.number(), z.boolean()]).transform(String),
);

/** Enough to `docker create` the model's container when it is missing. */
const RawContainer = z.strictObject({
  image: z.string().min(1),
  command: z.union([
    z.array(z.string()),
    z.string().transform((s) => s.split(/\s+/).filter(Boolean)),
  ])
    .default([]),
  entrypoint: z.array(z.string()).optional(),
  ports: z.array(
    z.string().regex(PORT_PATTERN, 'expected "[ip:]host_port:container_port", e.g. "8080:8080"'),
  ).default([]),
  volumes: z.array(
    z.string().regex(VOLUME_PATTERN, 'expected "host_path:/container/path[:ro]"'),
  ).default([]),
  devices: z.array(
    z.string().regex(DEVICE_PATTERN, 'expected "/dev/name" or "/dev/name:/dev/name"'),
  ).default([]),
  env: stringMap.default({}),
  gpus: z.union([
    z.literal("all"),
    z.number().int().positive(),
    z.array(z.union([z.string(), z.number()]).transform(String)).min(1),
  ]).optional(),
  group_add: z.array(z.string().min(1)).default([]),
  labels: stringMap.default({}),
});

const RawKvCache = z.strictObject({
  /** Save each slot's KV cache before the model stops, restore it when it is back. */
  save: z.boolean().default(false),
  /** Host directory for the save files (a container: block mounts it); absent: inside it. */
  dir: z.string().min(1).optional(),
  /** Bytes of save files kept in `dir` for this model; oldest deleted first. */
  max_bytes: byteSize.default(20 * 1024 ** 3),
  save_timeout: seconds.default(30),
  restore_timeout: seconds.default(30),
});

const RawModel = z.strictObject({
  container_name: z.string().regex(
    CONTAINER_NAME,
    "expected a Docker container name (letters, digits, '_', '.', '-'; no '/')",
  ),
  backend_url: httpUrl,
  health_url: httpUrl.optional(),
  startup_timeout: seconds.default(120),
  aliases: z.array(z.string().min(1)).default([]),
  max_wait: seconds.optional(),
  on_disconnect: z.enum(["abort", "finish"]).default("abort"),
  /** Seconds idle before the container is stopped to free the GPU (absent: never). */
  ttl: seconds.optional(),
  /** Typical start-to-healthy seconds, the ETA's first guess until a load was observed. */
  load_time: seconds.optional(),
  /** How a waiting chat stream shows progress: SSE comments, or reasoning_content deltas. */
  wait_feedback: z.enum(["comment", "reasoning"]).default("comment"),
  /** Lets the proxy create the container when it is missing. */
  container: RawContainer.optional(),
  /** GB its container takes while it runs (with `memory_budget`: required). */
  memory: z.number().positive().optional(),
  /** Requests it serves at once (llama-server `-np`); default `num_workers`. */
  parallel: z.number().int().positive().optional(),
  kv_cache: RawKvCache.optional(),
});

const KEY = z.string().trim().min(16, "expected a key of at least 16 characters");

const RawStore = z.strictObject({
  /** kv: a Deno KV file (default); redis: Upstash REST (or SRH); memory: lost on restart. */
  type: z.enum(["kv", "redis", "memory"]).default("kv"),
  path: z.string().min(1).default("data/lqp.sqlite"),
  url: httpUrl.optional(),
  token: z.string().min(1).optional(),
  prefix: z.string().default("lqp:"),
  /** Seconds a node's claim on its jobs lasts without a heartbeat. */
  lease: seconds.default(15),
  /** Seconds finished job records are kept. */
  retention: seconds.default(24 * 3600),
  /** Seconds dead letters are kept. */
  dead_retention: seconds.default(7 * 24 * 3600),
});

const RawBatch = z.strictObject({
  max_file_size: byteSize.default(200 * 1024 * 1024),
  max_lines: z.number().int().positive().default(50_000),
});

const RawApiKey = z.strictObject({
  name: z.string().min(1),
  key: KEY.optional(),
  /** A file holding the key, so config.yml can be shared without secrets. */
  key_file: z.string().min(1).optional(),
  priority: z.enum(["interactive", "batch"]).default("interactive"),
}).refine((k) => (k.key === undefined) !== (k.key_file === undefined), {
  message: "give exactly one of key and key_file",
});

const RawConfig = z.strictObject({
  host: z.string().min(1).default("0.0.0.0"),
  port: z.number().int().min(0).max(65535).default(8888),
  docker_socket: z.string().min(1).default("/var/run/docker.sock"),
  queue_size: z.number().int().positive().default(50),
  request_timeout: seconds.default(600),
  num_workers: z.number().int().positive().default(2),
  /** GB the running models may declare together; absent: one model at a time. */
  memory_budget: z.number().positive().optional(),
  max_body_size: byteSize.default(64 * 1024 * 1024),
  max_messages: z.number().int().positive().default(2000),
  max_queue_share: z.number().gt(0).max(1).default(0.5),
  /** Request bodies held in memory at once (read, waiting, in flight). */
  max_queued_bytes: byteSize.default(1024 ** 3),
  max_json_depth: z.number().int().min(2).max(1000).default(64),
  stop_timeout: z.number().int().min(0).default(10),
  shutdown_grace: z.number().min(0).default(10),
  keepalive_interval: seconds.default(5),
  /** Seconds a connection may take to send its request line and headers. */
  header_timeout: seconds.default(10),
  /** Seconds the body may take to arrive after the headers. */
  body_timeout: seconds.default(60),
  /** Seconds a keep-alive connection may sit without a request. */
  idle_timeout: seconds.default(30),
  /** Connections held at once; more are closed as they arrive. */
  max_connections: z.number().int().positive().default(4096),
  max_attempts: z.number().int().positive().default(3),
  api_keys: z.array(RawApiKey).default([]),
  admin_key: KEY.optional(),
  /** Log lines as plain text or JSON lines. */
  log_format: z.enum(["text", "json"]).default("text"),
  /** A model to load at start-up when none is running. */
  preload: z.string().min(1).optional(),
  scheduler: RawScheduler.default({ policy: "affinity", max_wait: 60, batch_aging: 600 }),
  store: RawStore.default(RawStore.parse({})),
  batch: RawBatch.default(RawBatch.parse({})),
  models: z.record(z.string().min(1), RawModel).default({}),
});

export type RawConfig = z.input<typeof RawConfig>;

/** Where the container sees `kv_cache.dir` (its `--slot-save-path`). */
export const KV_CACHE_MOUNT = "/kv-cache/";

/** A bad config file: one line per problem, ready to print. */
export class ConfigError extends Error {
  constructor(readonly source: string, readonly problems: readonly string[]) {
    super(`Invalid config ${source}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** Environment variables that override file values. */
export interface ConfigEnv {
  NUM_WORKERS?: string;
  LQP_HOST?: string;
  LQP_PORT?: string;
  DOCKER_SOCKET?: string;
  /** text or json, over `log_format`. */
  LOG_FORMAT?: string;
  /** Store type (kv, redis, memory), over `store.type`. */
  LQP_STORE?: string;
  /** Upstash REST credentials, as `Redis.fromEnv()` reads them. */
  UPSTASH_REDIS_REST_URL?: string;
  UPSTASH_REDIS_REST_TOKEN?: string;
}

/**
 * Parses and validates config text.
 * @throws {ConfigError} listing every problem with its key path and line.
 */
/** Reads a `key_file`; injected so parsing stays free of I/O. */
export type KeyFileReader = (path: string) => string;

const noKeyFiles: KeyFileReader = () => {
  throw new Error("key_file is only read when the config is loaded from a file");
};

export function parseConfig(
  text: string,
  source: string,
  env: ConfigEnv = {},
  readKeyFile: KeyFileReader = noKeyFiles,
  /** What a relative `kv_cache.dir` is under (loadConfig passes the process's). */
  workingDir = "/",
): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => `line ${lineCounter.linePos(e.pos[0]).line}: ${e.message}`),
    );
  }
  const data = doc.toJS() ?? {};
  const problems: string[] = [];
  const result = RawConfig.safeParse(data);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.map(String);
      const keys = issue.code === "unrecognized_keys" ? issue.keys : [undefined];
      for (const key of keys) {
        const full = key === undefined ? path : [...path, key];
        const line = lineOf(doc.contents, full, lineCounter);
        const message = key !== undefined
          ? "unknown key (typo?)"
          : issue.code === "invalid_type" && valueAt(data, path) === undefined
          ? `required key is missing (expected ${issue.expected})`
          : issue.message;
        problems.push(`${full.join(".") || "(top level)"} (line ${line}): ${message}`);
      }
    }
    throw new ConfigError(source, problems);
  }
  const raw = result.data;
  applyEnv(raw, env, problems);
  const models = resolveModels(raw, problems, doc.contents, lineCounter, workingDir);
  if (raw.preload !== undefined && !models.some((m) => m.id === raw.preload)) {
    const line = lineOf(doc.contents, ["preload"], lineCounter);
    problems.push(`preload (line ${line}): '${raw.preload}' is not a configured model`);
  }
  const apiKeys = resolveKeys(raw.api_keys, readKeyFile, problems, doc.contents, lineCounter);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return {
    host: raw.host,
    port: raw.port,
    dockerSocket: raw.docker_socket,
    queueSize: raw.queue_size,
    requestTimeoutMs: raw.request_timeout * 1000,
    numWorkers: raw.num_workers,
    memoryBudgetGb: raw.memory_budget ?? null,
    maxBodyBytes: raw.max_body_size,
    maxMessages: raw.max_messages,
    maxQueueShare: raw.max_queue_share,
    maxQueuedBytes: raw.max_queued_bytes,
    maxJsonDepth: raw.max_json_depth,
    stopTimeoutS: raw.stop_timeout,
    shutdownGraceMs: raw.shutdown_grace * 1000,
    keepaliveMs: raw.keepalive_interval * 1000,
    connections: {
      headerTimeoutMs: raw.header_timeout * 1000,
      bodyTimeoutMs: raw.body_timeout * 1000,
      idleTimeoutMs: raw.idle_timeout * 1000,
      maxConnections: raw.max_connections,
    },
    maxAttempts: raw.max_attempts,
    apiKeys,
    adminKey: raw.admin_key ?? null,
    preload: raw.preload ?? null,
    logFormat: raw.log_format,
    scheduler: {
      policy: raw.scheduler.policy,
      maxWaitMs: raw.scheduler.max_wait * 1000,
      minResidencyMs: raw.scheduler.min_residency === undefined
        ? null
        : raw.scheduler.min_residency * 1000,
      batchAgingMs: raw.scheduler.batch_aging * 1000,
    },
    store: {
      type: raw.store.type,
      path: raw.store.path,
      url: raw.store.url ?? null,
      token: raw.store.token ?? null,
      prefix: raw.store.prefix,
      leaseMs: raw.store.lease * 1000,
      retentionMs: raw.store.retention * 1000,
      deadRetentionMs: raw.store.dead_retention * 1000,
    },
    batch: { maxFileBytes: raw.batch.max_file_size, maxLines: raw.batch.max_lines },
    models,
  };
}

type ParsedRaw = z.output<typeof RawConfig>;

function applyEnv(raw: ParsedRaw, env: ConfigEnv, problems: string[]): void {
  const positiveInt = (name: keyof ConfigEnv, max = Number.MAX_SAFE_INTEGER) => {
    const text = env[name];
    if (text === undefined || text === "") return undefined;
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1 || value > max) {
      problems.push(`env ${name}: expected an integer from 1 to ${max}, got '${text}'`);
      return undefined;
    }
    return value;
  };
  raw.num_workers = positiveInt("NUM_WORKERS") ?? raw.num_workers;
  raw.port = positiveInt("LQP_PORT", 65535) ?? raw.port;
  if (env.LQP_HOST) raw.host = env.LQP_HOST;
  if (env.DOCKER_SOCKET) raw.docker_socket = env.DOCKER_SOCKET;
  if (env.LOG_FORMAT) {
    const format = RawConfig.shape.log_format.safeParse(env.LOG_FORMAT);
    if (format.success) raw.log_format = format.data;
    else problems.push(`env LOG_FORMAT: expected text or json, got '${env.LOG_FORMAT}'`);
  }
  if (env.LQP_STORE) {
    const type = RawStore.shape.type.safeParse(env.LQP_STORE);
    if (type.success) raw.store.type = type.data;
    else problems.push(`env LQP_STORE: expected kv, redis or memory, got '${env.LQP_STORE}'`);
  }
  raw.store.url ??= env.UPSTASH_REDIS_REST_URL || undefined;
  raw.store.token ??= env.UPSTASH_REDIS_REST_TOKEN || undefined;
  if (
    raw.store.type === "redis" && (raw.store.url === undefined || raw.store.token === undefined)
  ) {
    problems.push(
      "store: type redis needs url and token (or env UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN)",
    );
  }
}

function resolveModels(
  raw: ParsedRaw,
  problems: string[],
  root: Node | null,
  lines: LineCounter,
  workingDir: string,
): ModelConfig[] {
  const owners = new Map<string, string>();
  const containers = new Map<string, string>();
  const models: ModelConfig[] = [];
  for (const [id, model] of Object.entries(raw.models)) {
    for (const name of [id, ...model.aliases]) {
      const owner = owners.get(name);
      if (owner !== undefined && !(owner === id && name === id)) {
        const line = lineOf(root, ["models", id, "aliases"], lines);
        problems.push(`models.${id}.aliases (line ${line}): '${name}' is already used by ${owner}`);
      }
      owners.set(name, id);
    }
    const sharing = containers.get(model.container_name);
    if (sharing !== undefined) {
      const line = lineOf(root, ["models", id, "container_name"], lines);
      problems.push(
        `models.${id}.container_name (line ${line}): '${model.container_name}' is already used by ${sharing}`,
      );
    }
    containers.set(model.container_name, id);
    const kvCache = model.kv_cache;
    // A relative dir is under the working directory (data/kv-cache: where `deno task start`
    // may write); Docker needs it absolute.
    const kvDir = kvCache?.save && kvCache.dir !== undefined
      ? decodeURIComponent(new URL(kvCache.dir, `file://${workingDir}/`).pathname).replace(
        /\/+$/,
        "",
      )
      : undefined;
    if (kvDir !== undefined && model.container === undefined) {
      const line = lineOf(root, ["models", id, "kv_cache", "dir"], lines);
      problems.push(
        `models.${id}.kv_cache.dir (line ${line}): needs a container: block to mount it; for a container you created, start llama-server with --slot-save-path and leave dir out`,
      );
    }
    if (raw.memory_budget !== undefined) {
      const line = lineOf(root, ["models", id], lines);
      if (model.memory === undefined) {
        problems.push(
          `models.${id}.memory (line ${line}): required when memory_budget is set (GB its container takes)`,
        );
      } else if (model.memory > raw.memory_budget) {
        problems.push(
          `models.${id}.memory (line ${line}): ${model.memory} GB is more than memory_budget (${raw.memory_budget} GB)`,
        );
      }
    }
    models.push({
      id,
      containerName: model.container_name,
      backendUrl: model.backend_url.replace(/\/+$/, ""),
      healthUrl: model.health_url ?? `${new URL(model.backend_url).origin}/health`,
      startupTimeoutMs: model.startup_timeout * 1000,
      aliases: model.aliases,
      maxWaitMs: (model.max_wait ?? raw.scheduler.max_wait) * 1000,
      onDisconnect: model.on_disconnect,
      ttlMs: model.ttl === undefined ? null : model.ttl * 1000,
      loadTimeHintMs: (model.load_time ?? model.startup_timeout) * 1000,
      waitFeedback: model.wait_feedback,
      memoryGb: model.memory ?? null,
      parallel: model.parallel ?? raw.num_workers,
      kvCache: kvCache?.save
        ? {
          dir: kvDir ?? null,
          maxBytes: kvCache.max_bytes,
          saveTimeoutMs: kvCache.save_timeout * 1000,
          restoreTimeoutMs: kvCache.restore_timeout * 1000,
        }
        : null,
      container: model.container === undefined ? null : {
        image: model.container.image,
        // With a kv_cache dir, llama-server saves its slots where the proxy can see them.
        command: kvDir === undefined
          ? model.container.command
          : [...model.container.command, "--slot-save-path", KV_CACHE_MOUNT],
        entrypoint: model.container.entrypoint ?? null,
        ports: model.container.ports,
        volumes: kvDir === undefined
          ? model.container.volumes
          : [...model.container.volumes, `${kvDir}:${KV_CACHE_MOUNT.slice(0, -1)}`],
        devices: model.container.devices,
        env: model.container.env,
        gpus: model.container.gpus ?? null,
        groupAdd: model.container.group_add,
        labels: model.container.labels,
      },
    });
  }
  return models;
}

/** Reads key files and checks that names and keys are unique. */
function resolveKeys(
  keys: ParsedRaw["api_keys"],
  readKeyFile: KeyFileReader,
  problems: string[],
  root: Node | null,
  lines: LineCounter,
): ApiKeyConfig[] {
  const names = new Set<string>();
  const secrets = new Set<string>();
  const resolved: ApiKeyConfig[] = [];
  keys.forEach((entry, index) => {
    const line = (field: string) => lineOf(root, ["api_keys", String(index), field], lines);
    let key = entry.key;
    if (entry.key_file !== undefined) {
      try {
        const parsed = KEY.safeParse(readKeyFile(entry.key_file));
        if (parsed.success) key = parsed.data;
        else {
          problems.push(
            `api_keys.${index}.key_file (line ${line("key_file")}): ${
              parsed.error.issues[0].message
            }`,
          );
        }
      } catch (err) {
        problems.push(
          `api_keys.${index}.key_file (line ${line("key_file")}): cannot read ${entry.key_file} (${
            messageOf(err)
          })`,
        );
      }
    }
    if (names.has(entry.name)) {
      problems.push(`api_keys.${index}.name (line ${line("name")}): '${entry.name}' is used twice`);
    }
    if (key !== undefined && secrets.has(key)) {
      problems.push(`api_keys.${index}.key (line ${line("key")}): the same key is listed twice`);
    }
    names.add(entry.name);
    if (key !== undefined) {
      secrets.add(key);
      resolved.push({ name: entry.name, key, priority: entry.priority });
    }
  });
  return resolved;
}

function valueAt(data: unknown, path: readonly string[]): unknown {
  let value = data;
  for (const key of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

/** Line (1-based) of the deepest node on `path` that exists in the YAML document. */
function lineOf(root: Node | null, path: readonly string[], lines: LineCounter): number {
  let node: unknown = root;
  let offset = root?.range?.[0] ?? 0;
  for (const key of path) {
    if (isSeq(node)) {
      const item = node.items[Number(key)] as Node | undefined;
      if (!item?.range) break;
      offset = item.range[0];
      node = item;
      continue;
    }
    if (!isMap(node)) break;
    const pair = node.items.find((item) =>
      isPair(item) && isScalar(item.key) && String(item.key.value) === key
    );
    if (!pair) break;
    if (isScalar(pair.key) && pair.key.range) offset = pair.key.range[0];
    node = pair.value;
  }
  return lines.linePos(offset).line;
}

/**
 * Reads and parses a config file.
 * @throws {ConfigError} when the file is missing, unreadable or invalid.
 */
export async function loadConfig(path: string, env: ConfigEnv = {}): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound
      ? "file not found (pass --config PATH or set LQP_CONFIG)"
      : err instanceof Deno.errors.NotCapable
      ? `no permission to read it (run with --allow-read=${path})`
      : String(err);
    throw new ConfigError(path, [reason]);
  }
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
  return parseConfig(
    text,
    path,
    env,
    (file) => Deno.readTextFileSync(file.startsWith("/") ? file : dir + file),
    Deno.cwd(),
  );
}

/** Finds a model by id or alias. */
export function findModel(config: Config, name: string): ModelConfig | undefined {
  return config.models.find((m) => m.id === name || m.aliases.includes(name));
}
