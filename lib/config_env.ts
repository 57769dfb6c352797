/**
 * @module
 * Environment variables that override config.yml's values. A bad value is reported like a bad
 * key, beside the file's other problems.
 */
import { type ParsedConfig, RawConfig, RawStore } from "./config_schema.ts";

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

/** Writes the overrides into `raw`; a bad value leaves the file's and adds a problem. */
export function applyEnv(raw: ParsedConfig, env: ConfigEnv, problems: string[]): void {
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
  // Checked here rather than in the schema: the credentials may come from the environment.
  if (
    raw.store.type === "redis" && (raw.store.url === undefined || raw.store.token === undefined)
  ) {
    problems.push(
      "store: type redis needs url and token (or env UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN)",
    );
  }
}
