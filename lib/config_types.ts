/**
 * @module
 * The resolved config the rest of the proxy reads: camelCase, milliseconds, nulls instead of
 * absent keys. `parseConfig()` (config.ts) builds it from config.yml.
 */
import type { ApiKeyConfig } from "./auth.ts";
import type { ContainerSpec } from "./container_spec.ts";
import type { ConnectionLimits } from "./http_server.ts";
import type { LogFormat } from "./log.ts";
import type { PolicyName } from "./scheduler.ts";

export interface ModelConfig {
  id: string;
  containerName: string;
  /** Base URL requests are forwarded to; a trailing `/v1` replaces the request's `/v1`. */
  backendUrl: string;
  healthUrl: string;
  startupTimeoutMs: number;
  aliases: readonly string[];
  maxWaitMs: number;
  /** What a client leaving mid-answer does: abort the generation, or let it finish. */
  onDisconnect: "abort" | "finish";
  /** Idle time after which the model is unloaded, or null. */
  ttlMs: number | null;
  /** First guess of the load time, replaced by observed loads. */
  loadTimeHintMs: number;
  /** What a waiting chat stream is sent: SSE comments, or reasoning_content chunks. */
  waitFeedback: "comment" | "reasoning";
  /** How to create the container when it is missing, or null (the operator creates it). */
  container: ContainerSpec | null;
  /** Declared GB while it runs, or null (no `memory_budget`). */
  memoryGb: number | null;
  /** Requests it serves at once. */
  parallel: number;
  /** Slot KV caches saved across stops, or null (off). */
  kvCache: KvCacheConfig | null;
}

export interface KvCacheConfig {
  /** Host directory the proxy owns (budget, deleting bad files), or null: inside the container. */
  dir: string | null;
  maxBytes: number;
  saveTimeoutMs: number;
  restoreTimeoutMs: number;
}

export interface SchedulerConfig {
  policy: PolicyName;
  maxWaitMs: number;
  /** null: each model's own (learned) load time, capped by its max_wait. */
  minResidencyMs: number | null;
  batchAgingMs: number;
}

export interface StoreConfig {
  type: "kv" | "redis" | "memory";
  /** KV file. */
  path: string;
  /** Upstash REST URL and token (Redis). */
  url: string | null;
  token: string | null;
  prefix: string;
  leaseMs: number;
  retentionMs: number;
  deadRetentionMs: number;
}

export interface BatchConfig {
  maxFileBytes: number;
  maxLines: number;
}

/** This node of a cluster (docs/cluster.md). */
export interface ClusterConfig {
  node: string;
  /** Base URL the peers reach this node at, without a trailing slash. */
  advertiseUrl: string;
  /** Shared by every node: signs the hop header of a forwarded request. */
  secret: string;
  heartbeatMs: number;
  leaseMs: number;
}

export interface Config {
  host: string;
  port: number;
  dockerSocket: string;
  queueSize: number;
  requestTimeoutMs: number;
  numWorkers: number;
  /** GB the running models may declare together; null: one model at a time. */
  memoryBudgetGb: number | null;
  maxBodyBytes: number;
  maxMessages: number;
  maxJsonDepth: number;
  /** Share of queue_size (and of max_queued_bytes) one API key may hold. */
  maxQueueShare: number;
  /** Bytes of request bodies held at once. */
  maxQueuedBytes: number;
  stopTimeoutS: number;
  /** How long requests in flight may run on after SIGTERM. */
  shutdownGraceMs: number;
  keepaliveMs: number;
  /** Limits on each client connection (slow or stalled clients, how many). */
  connections: ConnectionLimits;
  maxAttempts: number;
  /** Empty: no authentication (the homelab default). */
  apiKeys: readonly ApiKeyConfig[];
  /** Key for /admin; without it the admin endpoints are off. */
  adminKey: string | null;
  preload: string | null;
  logFormat: LogFormat;
  scheduler: SchedulerConfig;
  store: StoreConfig;
  batch: BatchConfig;
  /** Null: a single proxy. */
  cluster: ClusterConfig | null;
  models: readonly ModelConfig[];
}
