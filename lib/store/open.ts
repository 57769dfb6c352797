/**
 * @module
 * Opens the store the config names.
 */
import type { StoreConfig } from "../config_types.ts";
import type { JobStore } from "./contract.ts";
import { KvJobStore } from "./kv_store.ts";
import { RedisJobStore } from "./redis_store.ts";

export async function openStore(config: StoreConfig): Promise<JobStore> {
  switch (config.type) {
    case "memory":
      return await KvJobStore.open(":memory:");
    case "kv":
      return await KvJobStore.open(config.path);
    case "redis":
      return new RedisJobStore({ url: config.url!, token: config.token!, prefix: config.prefix });
  }
}
