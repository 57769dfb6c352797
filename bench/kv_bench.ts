/**
 * @module
 * Warm returns (`kv_cache`): what a swap spends saving and restoring slot KV caches, per GB
 * of save files, and the prompt time the return saves, against the same model without
 * `kv_cache`. The look-alike writes its slots as JSON and "processes" each uncached prompt
 * token in `promptUs` µs, so the ms per GB measure the proxy's path and the disk, not a GPU.
 */
import { createHomelab } from "../tests/support/fake_models.ts";
import type { DockerApi } from "../lib/docker.ts";
import { type ProxyProcess, round } from "./tools.ts";

function conversation(words: number, seed: string) {
  const text = Array.from({ length: words }, (_, i) => `${seed}${i % 997}`).join(" ");
  return [{ role: "user", content: text }];
}

async function ask(url: string, model: string, messages: unknown[]) {
  const started = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model, messages, fake_tokens: 2 }),
  });
  const body = await res.json();
  return { ms: performance.now() - started, answer: body.choices[0].message.content as string };
}

/** Sum of a Prometheus series (`name{model="m"} value`) in a scrape. */
function series(text: string, name: string, model: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{model="${model}"}`));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

export async function kvCacheBench(
  api: DockerApi,
  start: (configYaml: string) => Promise<ProxyProcess>,
  words: number,
) {
  const dir = await Deno.makeTempDir({ prefix: "lqp-kv-bench-" });
  const model = { fromConfig: true, promptUs: 20, tokenMs: 0, loadMs: 100, record: false };
  try {
    const lab = await createHomelab(api, [
      { id: "warm", ...model, kvCache: `{ save: true, dir: ${dir} }` },
      { id: "cold", ...model },
      { id: "other", loadMs: 100, record: false },
    ]);
    try {
      const proxy = await start(lab.configYaml("num_workers: 2\nstore:\n  type: memory"));
      try {
        const returnMs: Record<string, number> = {};
        // One save (the swap away) and one restore (the return) of the warm model, read before
        // the cold model's turns make it save again.
        let prom = "";
        let bytes = 0;
        for (const id of ["warm", "cold"]) {
          const first = conversation(words, id);
          const one = await ask(proxy.url, id, first);
          await ask(proxy.url, "other", conversation(1, "x")); // the swap away
          const next = [...first, { role: "assistant", content: one.answer }, {
            role: "user",
            content: "next",
          }];
          returnMs[id] = (await ask(proxy.url, id, next)).ms;
          if (id !== "warm") continue;
          prom = await (await fetch(`${proxy.url}/metrics?format=prometheus`)).text();
          for await (const entry of Deno.readDir(dir)) {
            bytes += (await Deno.stat(`${dir}/${entry.name}`)).size;
          }
        }
        const saveMs = series(prom, "lqp_kv_save_seconds_sum", "warm") * 1000;
        const restoreMs = series(prom, "lqp_kv_restore_seconds_sum", "warm") * 1000;
        const gb = bytes / 1024 ** 3;
        return {
          tokens: series(prom, "lqp_kv_saved_tokens_total", "warm"),
          save_mb: round(bytes / 1024 ** 2, 2),
          save_ms: round(saveMs, 1),
          restore_ms: round(restoreMs, 1),
          ms_per_gb: round((saveMs + restoreMs) / Math.max(gb, 1e-9), 0),
          return_warm_ms: round(returnMs.warm, 1),
          return_cold_ms: round(returnMs.cold, 1),
          prompt_ms_saved: round(returnMs.cold - returnMs.warm, 1),
        };
      } finally {
        await proxy.stop();
      }
    } finally {
      await lab.remove();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
