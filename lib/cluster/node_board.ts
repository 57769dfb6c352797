/**
 * @module
 * The nodes of a cluster as Redis knows them: each node's status under a key of its own that
 * expires a lease after its last heartbeat (so a dead node disappears by Redis' clock, not by
 * comparing two hosts' clocks), and a set of the names ever seen. Spoken over Upstash REST
 * (or SRH), like the job store.
 */
import type { Redis } from "@upstash/redis";
import { upstashClient } from "../store/upstash_client.ts";
import { z } from "zod";

/** What one node tells its peers on each heartbeat. */
export const NodeStatus = z.object({
  node: z.string(),
  /** Where peers reach it. */
  url: z.string(),
  /** The models it can serve, with their aliases. */
  models: z.array(z.object({ id: z.string(), aliases: z.array(z.string()) })),
  /** Its models that are not stopped, and their phase. */
  residents: z.array(z.object({ model: z.string(), phase: z.string() })),
  /** Models it would start without stopping another. */
  roomFor: z.array(z.string()),
  /** Requests waiting, per model. */
  waiting: z.record(z.string(), z.number()),
  /** Requests being served. */
  running: z.number(),
  /** Workers free on its ready models. */
  freeWorkers: z.number(),
  /** Learned start-to-healthy seconds, per model. */
  loadS: z.record(z.string(), z.number()),
});
export type NodeStatus = z.infer<typeof NodeStatus>;

export interface NodeBoardOptions {
  url: string;
  token: string;
  /** The store's key prefix: the cluster lives beside the jobs it shares. */
  prefix: string;
  /** Each call gives up after this long (a gateway that accepts and never answers). */
  timeoutMs: number;
}

export class NodeBoard {
  readonly #redis: Redis;
  readonly #members: string;
  readonly #prefix: string;

  constructor(options: NodeBoardOptions) {
    // A heartbeat comes again in a second; a retried one would arrive stale.
    this.#redis = upstashClient({ ...options, retries: 0 });
    this.#prefix = `${options.prefix}cluster:`;
    this.#members = `${this.#prefix}members`;
  }

  #keyOf(node: string): string {
    return `${this.#prefix}node:${node}`;
  }

  /** Writes `status`, alive for `leaseMs` unless written again. */
  async publish(status: NodeStatus, leaseMs: number): Promise<void> {
    const pipe = this.#redis.pipeline();
    pipe.set(this.#keyOf(status.node), JSON.stringify(status), { px: Math.ceil(leaseMs) });
    pipe.sadd(this.#members, status.node);
    await pipe.exec();
  }

  /** Every node whose lease holds, as it last wrote itself; forgets the names that expired. */
  async live(): Promise<NodeStatus[]> {
    const names = await this.#redis.smembers(this.#members);
    if (names.length === 0) return [];
    const values = await this.#redis.mget<(string | null)[]>(...names.map((n) => this.#keyOf(n)));
    const live: NodeStatus[] = [];
    const gone: string[] = [];
    values.forEach((value, i) => {
      const status = value === null ? null : parseStatus(value);
      if (status !== null) live.push(status);
      else gone.push(names[i]);
    });
    if (gone.length > 0) await this.#redis.srem(this.#members, ...gone);
    return live;
  }

  /**
   * Settles which node loads `model` when several decide to at once: the first claim within
   * `ttlMs` wins. Returns the winner, `node` when this claim won.
   */
  async claimPlacement(model: string, node: string, ttlMs: number): Promise<string> {
    const key = `${this.#prefix}placing:${model}`;
    const set = await this.#redis.set(key, node, { nx: true, px: Math.ceil(ttlMs) });
    if (set === "OK") return node;
    return (await this.#redis.get<string>(key)) ?? node;
  }

  /** Takes `node` off the board at once (a clean shutdown), instead of after its lease. */
  async leave(node: string): Promise<void> {
    await this.#redis.del(this.#keyOf(node));
  }
}

/** A node's status, or null when the value is not one (a node of another version). */
function parseStatus(text: string): NodeStatus | null {
  try {
    const parsed = NodeStatus.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
