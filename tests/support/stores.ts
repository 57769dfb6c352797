/**
 * @module
 * The two real stores the contract suite runs against: Deno KV on a temp file, and a real
 * redis-server behind the Upstash-REST gateway, spoken to by `@upstash/redis`.
 */
import type { JobStore } from "../../lib/store/contract.ts";
import { KvJobStore } from "../../lib/store/kv_store.ts";
import { RedisJobStore } from "../../lib/store/redis_store.ts";
import { RedisServer } from "./redis_server.ts";
import { UpstashGateway } from "./upstash_gateway.ts";
import { withTempDir } from "./temp_dir.ts";

export type StoreKind = "kv" | "redis";
export const STORE_KINDS: readonly StoreKind[] = ["kv", "redis"];

/** A Redis with an Upstash-REST front, torn down together. */
export class RedisStack {
  readonly redis: RedisServer;
  readonly gateway: UpstashGateway;

  private constructor(redis: RedisServer, gateway: UpstashGateway) {
    this.redis = redis;
    this.gateway = gateway;
  }

  /** config.yml's `store:` block for a proxy on this Redis; `lease` in seconds. */
  storeYaml(lease: number): string {
    return [
      "store:",
      "  type: redis",
      `  url: ${this.gateway.url}`,
      `  token: ${this.gateway.token}`,
      `  lease: ${lease}`,
    ].join("\n");
  }

  static async start(): Promise<RedisStack> {
    const redis = await RedisServer.start();
    return new RedisStack(redis, await UpstashGateway.start(redis.port));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.gateway[Symbol.asyncDispose]();
    await this.redis[Symbol.asyncDispose]();
  }
}

/** Runs `fn` against a fresh store of `kind`, then removes it and whatever it started. */
export async function withStore(
  kind: StoreKind,
  fn: (store: JobStore) => Promise<void>,
): Promise<void> {
  if (kind === "kv") {
    return await withTempDir("lqp-kv-", async (dir) => {
      const store = await KvJobStore.open(`${dir}/jobs.sqlite`);
      try {
        await fn(store);
      } finally {
        await store.close();
      }
    });
  }
  await using stack = await RedisStack.start();
  const store = new RedisJobStore({ url: stack.gateway.url, token: stack.gateway.token });
  try {
    await fn(store);
  } finally {
    await store.close();
  }
}
