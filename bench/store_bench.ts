/**
 * @module
 * Job-store and batch measurements for `deno task bench`: store throughput (enqueue → take →
 * ack) for Deno KV on disk and Redis over Upstash REST, against in-memory KV as the baseline
 * measured in the same run; and a batch against the same requests sent one by one.
 */
import type { JobStore, NewAsyncJob } from "../lib/store/contract.ts";
import { KvJobStore } from "../lib/store/kv_store.ts";
import { RedisJobStore } from "../lib/store/redis_store.ts";
import { parseConfig } from "../lib/config.ts";
import { silentLogger } from "../lib/log.ts";
import { startProxy } from "../main.ts";
import { batchDone, batchFile, submitBatch } from "../tests/support/batches.ts";
import { RedisStack } from "../tests/support/stores.ts";
import { round } from "./tools.ts";

type Row = Record<string, number>;

function jobs(prefix: string, n: number): NewAsyncJob[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${i}`,
    model: "a",
    priority: "batch",
    lane: "a",
    order: i,
    group: prefix,
    payload: JSON.stringify({ custom_id: `c${i}`, body: { model: "a", messages: [] } }),
  }));
}

/** Jobs per second through enqueue → claim → complete, one job at a time and in bulk. */
async function cycle(store: JobStore, n: number): Promise<Row> {
  let now = Date.now();
  const one = jobs("one", n);
  const t0 = performance.now();
  for (const job of one) {
    await store.enqueue([job], now);
    const [claimed] = await store.claim("a", "bench", 1, now);
    await store.complete(claimed.id, "bench", 1, "done", "{}", ++now);
  }
  const singleS = (performance.now() - t0) / 1000;

  const t1 = performance.now();
  await store.enqueue(jobs("bulk", n), now);
  while (true) {
    const claimed = await store.claim("a", "bench", 10, now);
    if (claimed.length === 0) break;
    await Promise.all(claimed.map((job) => store.complete(job.id, "bench", 1, "done", "{}", now)));
  }
  const bulkS = (performance.now() - t1) / 1000;
  return { one_by_one_jobs_per_s: round(n / singleS, 1), bulk_jobs_per_s: round(n / bulkS, 1) };
}

export async function storeThroughput(n: number): Promise<Record<string, Row>> {
  const out: Record<string, Row> = {};
  const memory = await KvJobStore.open(":memory:");
  out.memory_kv = await cycle(memory, n);
  await memory.close();

  const dir = await Deno.makeTempDir({ prefix: "lqp-bench-kv-" });
  const kv = await KvJobStore.open(`${dir}/jobs.sqlite`);
  out.kv_file = await cycle(kv, n);
  await kv.close();
  await Deno.remove(dir, { recursive: true });

  await using stack = await RedisStack.start();
  const redis = new RedisJobStore({ url: stack.gateway.url, token: stack.gateway.token });
  out.redis_rest = await cycle(redis, n);
  return out;
}

/** N requests as a batch vs the same N sent one by one (and N at num_workers at a time). */
export async function batchVsSync(
  configYaml: string,
  n: number,
  numWorkers: number,
): Promise<Row> {
  const dir = await Deno.makeTempDir({ prefix: "lqp-bench-batch-" });
  const config = parseConfig(`${configYaml}\nstore:\n  path: ${dir}/jobs.sqlite`, "bench");
  const proxy = await startProxy(config, { log: silentLogger });
  try {
    const send = async () => {
      const res = await fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "a", messages: [{ role: "user", content: "hi" }] }),
      });
      await res.text();
      if (!res.ok) throw new Error(`sync request: ${res.status}`);
    };
    await send(); // model loaded before any clock starts

    const t0 = performance.now();
    for (let i = 0; i < n; i++) await send();
    const sequentialS = (performance.now() - t0) / 1000;

    const t1 = performance.now();
    await Promise.all(Array.from({ length: numWorkers }, async () => {
      for (let i = 0; i < n / numWorkers; i++) await send();
    }));
    const concurrentS = (performance.now() - t1) / 1000;

    const t2 = performance.now();
    const batch = await submitBatch(proxy.url, batchFile(Array(n).fill("a")));
    // Polled often: the poll interval must not be what is measured.
    const done = await batchDone(proxy.url, batch.id, { timeoutMs: 600_000, intervalMs: 5 });
    const batchS = (performance.now() - t2) / 1000;
    if (done.request_counts.completed !== n) throw new Error(`batch: ${JSON.stringify(done)}`);
    return {
      requests: n,
      sync_one_by_one_s: round(sequentialS, 2),
      sync_concurrent_s: round(concurrentS, 2),
      batch_s: round(batchS, 2),
    };
  } finally {
    await proxy.close(2000);
    await Deno.remove(dir, { recursive: true });
  }
}
