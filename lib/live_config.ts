/**
 * @module
 * The config in force, replaceable while the proxy runs (SIGHUP, file watch). Readers ask for
 * `current` each time instead of keeping a copy. What a new file changes is worked out here,
 * purely: models added, removed or changed, other settings, and the settings that only a
 * restart can change (those keep their old values until then).
 */
import { type ApiKeyConfig, KeyRing } from "./auth.ts";
import { findModel } from "./config.ts";
import type { Config, ModelConfig } from "./config_types.ts";

/** Settings bound at start-up: the listening socket and its limits, the store, the workers. */
const RESTART_ONLY = {
  host: "host",
  port: "port",
  dockerSocket: "docker_socket",
  numWorkers: "num_workers",
  stopTimeoutS: "stop_timeout",
  logFormat: "log_format",
  store: "store",
  connections: "header_timeout/body_timeout/idle_timeout/max_connections",
  cluster: "cluster",
} as const satisfies Partial<Record<keyof Config, string>>;

/** Other top-level settings, by their config.yml names. */
const RELOADABLE = {
  queueSize: "queue_size",
  memoryBudgetGb: "memory_budget",
  requestTimeoutMs: "request_timeout",
  maxBodyBytes: "max_body_size",
  maxMessages: "max_messages",
  maxJsonDepth: "max_json_depth",
  maxQueueShare: "max_queue_share",
  maxQueuedBytes: "max_queued_bytes",
  shutdownGraceMs: "shutdown_grace",
  keepaliveMs: "keepalive_interval",
  maxAttempts: "max_attempts",
  apiKeys: "api_keys",
  adminKey: "admin_key",
  preload: "preload",
  scheduler: "scheduler",
  batch: "batch",
} as const satisfies Partial<Record<keyof Config, string>>;

export interface ConfigChanges {
  added: string[];
  removed: string[];
  changed: string[];
  /** Reloadable settings that changed (config.yml names). */
  settings: string[];
  /** Settings that changed in the file but keep their old value until a restart. */
  restartNeeded: string[];
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * What `next` changes relative to `prev`, and the config to put in force: `next` with the
 * restart-only settings of `prev`.
 */
export function planReload(prev: Config, next: Config): { config: Config; changes: ConfigChanges } {
  const before = new Map(prev.models.map((m) => [m.id, m]));
  const after = new Map(next.models.map((m) => [m.id, m]));
  const changes: ConfigChanges = {
    added: next.models.filter((m) => !before.has(m.id)).map((m) => m.id),
    removed: prev.models.filter((m) => !after.has(m.id)).map((m) => m.id),
    changed: next.models.filter((m) => before.has(m.id) && !same(before.get(m.id), m))
      .map((m) => m.id),
    settings: Object.entries(RELOADABLE)
      .filter(([key]) => !same(prev[key as keyof Config], next[key as keyof Config]))
      .map(([, name]) => name),
    restartNeeded: Object.entries(RESTART_ONLY)
      .filter(([key]) => !same(prev[key as keyof Config], next[key as keyof Config]))
      .map(([, name]) => name),
  };
  const config: Config = { ...next };
  for (const key of Object.keys(RESTART_ONLY) as (keyof typeof RESTART_ONLY)[]) {
    Object.assign(config, { [key]: prev[key] });
  }
  return { config, changes };
}

export function nothingChanged(changes: ConfigChanges): boolean {
  return changes.added.length + changes.removed.length + changes.changed.length +
      changes.settings.length + changes.restartNeeded.length === 0;
}

/** The API keys' ring and the admin key's (empty: admin endpoints off). */
async function rings(config: Config): Promise<{ keys: KeyRing; admin: KeyRing }> {
  const adminEntries: ApiKeyConfig[] = config.adminKey === null
    ? []
    : [{ name: "admin", key: config.adminKey, priority: "interactive" }];
  const [keys, admin] = await Promise.all([
    KeyRing.create(config.apiKeys),
    KeyRing.create(adminEntries),
  ]);
  return { keys, admin };
}

export class LiveConfig {
  #current: Config;
  #keys: KeyRing;
  #adminKeys: KeyRing;

  private constructor(config: Config, keys: KeyRing, adminKeys: KeyRing) {
    this.#current = config;
    this.#keys = keys;
    this.#adminKeys = adminKeys;
  }

  static async create(config: Config): Promise<LiveConfig> {
    const { keys, admin } = await rings(config);
    return new LiveConfig(config, keys, admin);
  }

  get current(): Config {
    return this.#current;
  }

  /** The API keys in force. */
  get keys(): KeyRing {
    return this.#keys;
  }

  /** The admin key in force (an empty ring: admin endpoints are off). */
  get adminKeys(): KeyRing {
    return this.#adminKeys;
  }

  /** Finds a model by id or alias in the config in force. */
  model(name: string): ModelConfig | undefined {
    return findModel(this.#current, name);
  }

  /**
   * Prepares `config` (hashes its keys) and returns the step that puts it in force, keys
   * included. That step is synchronous, so the caller can move every other part to the new
   * config before any request sees a mix.
   */
  async prepare(config: Config): Promise<() => void> {
    const { keys, admin } = await rings(config);
    return () => {
      this.#current = config;
      this.#keys = keys;
      this.#adminKeys = admin;
    };
  }
}
