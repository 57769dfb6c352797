/**
 * @module
 * The zod schema of config.yml as written: every key, its type, its default. What the values
 * become (milliseconds, models with their checks, keys read from files) is worked out by
 * config.ts, config_models.ts and config_api_keys.ts.
 */
import { z } from "zod";
import { DEVICE_PATTERN, PORT_PATTERN, VOLUME_PATTERN } from "./container_spec.ts";

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

/** An API key or the admin key, written inline or read from a `key_file`. */
export const accessKey = z.string().trim().min(16, "expected a key of at least 16 characters");

/** Exported for the `LQP_STORE` override, which accepts exactly what `store.type` does. */
export const RawStore = z.strictObject({
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

/** Several proxies sharing one Redis (docs/cluster.md); the secret is read from its file. */
const RawCluster = z.strictObject({
  /** This node's name among its peers. */
  node: z.string().regex(CONTAINER_NAME, "expected letters, digits, '.', '_' or '-'"),
  /** Where the peers reach this node, e.g. http://10.0.0.5:8888. */
  advertise_url: httpUrl,
  /** A file holding the secret every node shares (at least 16 characters). */
  secret_file: z.string().min(1),
  /** Seconds between two of this node's heartbeats. */
  heartbeat: seconds.default(1),
  /** Seconds after its last heartbeat that a node counts as gone. */
  lease: seconds.default(5),
});

const RawBatch = z.strictObject({
  max_file_size: byteSize.default(200 * 1024 * 1024),
  max_lines: z.number().int().positive().default(50_000),
});

const RawApiKey = z.strictObject({
  name: z.string().min(1),
  key: accessKey.optional(),
  /** A file holding the key, so config.yml can be shared without secrets. */
  key_file: z.string().min(1).optional(),
  priority: z.enum(["interactive", "batch"]).default("interactive"),
}).refine((k) => (k.key === undefined) !== (k.key_file === undefined), {
  message: "give exactly one of key and key_file",
});

export const RawConfig = z.strictObject({
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
  /** Request bodies held in memory at once (read, waiting, sent until the backend answers). */
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
  admin_key: accessKey.optional(),
  /** Log lines as plain text or JSON lines. */
  log_format: z.enum(["text", "json"]).default("text"),
  /** A model to load at start-up when none is running. */
  preload: z.string().min(1).optional(),
  scheduler: RawScheduler.default({ policy: "affinity", max_wait: 60, batch_aging: 600 }),
  store: RawStore.default(RawStore.parse({})),
  batch: RawBatch.default(RawBatch.parse({})),
  cluster: RawCluster.optional(),
  models: z.record(z.string().min(1), RawModel).default({}),
});

export type RawConfig = z.input<typeof RawConfig>;

/** config.yml after the schema: defaults filled in, sizes in bytes, still in the file's units. */
export type ParsedConfig = z.output<typeof RawConfig>;
