/**
 * @module
 * config.yml's entry point: `parseConfig()` is pure (text in, resolved config or every problem
 * with key path and line out); `loadConfig()` does the I/O. The pieces it puts together: the
 * schema (config_schema.ts), YAML lines (yaml_problems.ts), env overrides (config_env.ts),
 * models (config_models.ts), API keys (config_api_keys.ts), the cluster (config_cluster.ts), the
 * result's types (config_types.ts).
 */
import { applyEnv, type ConfigEnv } from "./config_env.ts";
import { type KeyFileReader, resolveKeys } from "./config_api_keys.ts";
import { resolveCluster } from "./config_cluster.ts";
import { resolveModels } from "./config_models.ts";
import { RawConfig } from "./config_schema.ts";
import type { Config, ModelConfig } from "./config_types.ts";
import { parseYaml, schemaProblems } from "./yaml_problems.ts";

/** A bad config file: one line per problem, ready to print. */
export class ConfigError extends Error {
  constructor(readonly source: string, readonly problems: readonly string[]) {
    super(`Invalid config ${source}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

const noKeyFiles: KeyFileReader = () => {
  throw new Error("key_file and secret_file are only read when the config is loaded from a file");
};

/**
 * Parses and validates config text.
 * @throws {ConfigError} listing every problem with its key path and line.
 */
export function parseConfig(
  text: string,
  source: string,
  env: ConfigEnv = {},
  readKeyFile: KeyFileReader = noKeyFiles,
  /** What a relative `kv_cache.dir` is under (loadConfig passes the process's). */
  workingDir = "/",
): Config {
  const parsed = parseYaml(text);
  if (!parsed.ok) throw new ConfigError(source, parsed.problems);
  const { doc } = parsed;
  const result = RawConfig.safeParse(doc.data);
  if (!result.success) throw new ConfigError(source, schemaProblems(doc, result.error.issues));
  const raw = result.data;
  const problems: string[] = [];
  applyEnv(raw, env, problems);
  const models = resolveModels(raw, problems, doc.lineOf, workingDir);
  if (raw.preload !== undefined && !models.some((m) => m.id === raw.preload)) {
    const line = doc.lineOf(["preload"]);
    problems.push(`preload (line ${line}): '${raw.preload}' is not a configured model`);
  }
  const apiKeys = resolveKeys(raw.api_keys, readKeyFile, problems, doc.lineOf);
  const cluster = resolveCluster(raw, readKeyFile, problems, doc.lineOf);
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
    cluster,
    models,
  };
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
