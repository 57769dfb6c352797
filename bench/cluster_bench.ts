/**
 * @module
 * Cluster forwarding (#14): what the hop to a peer adds to a request. Two nodes as the cluster
 * tests start them (two proxy processes, one redis-server behind the Upstash REST gateway, a
 * look-alike lab each); node 1 has model a resident, node 2 has b. Small non-streaming requests
 * for b go alternately straight to node 2 (local) and to node 1, which forwards them to node 2
 * with a signed hop header, so both paths end at the same queue and the same backend.
 */
import { withTwoNodes } from "../tests/support/cluster_nodes.ts";
import { getJson } from "../tests/support/client.ts";
import { waitFor } from "../tests/support/wait_for.ts";
import { pct, round } from "./tools.ts";

/** Untimed requests each way before a round: JIT, connections, the board settled. */
const WARM_UP = 20;

interface Answer {
  ms: number;
  status: number;
  node: string | null;
}

async function ask(url: string, model = "b"): Promise<Answer> {
  const body = JSON.stringify({
    model,
    messages: [{ role: "user", content: "hi" }],
    fake_tokens: 1,
  });
  const started = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  await res.text();
  return {
    ms: performance.now() - started,
    status: res.status,
    node: res.headers.get("x-lqp-node"),
  };
}

/**
 * `runs` rounds of `requests` sequential requests each way, interleaved one by one (the order
 * within a pair alternating), so drift on a shared machine lands on both paths alike. One row per
 * round; `local_ok` and `forwarded_ok` count the answers that were 200 and came from where they
 * should (node 2 itself, or node 2 through node 1).
 */
export async function clusterForwarding(
  requests: number,
  runs: number,
): Promise<Record<string, number>[]> {
  const model = { ownPort: true, tokenMs: 0, loadMs: 100, record: false, watch: false } as const;
  const rows: Record<string, number>[] = [];
  await withTwoNodes([{ id: "a", ...model }, { id: "b", ...model }], "", async ({ nodes }) => {
    const [one, two] = nodes;
    const loaded = [await ask(one.url, "a"), await ask(two.url, "b")];
    if (loaded.some((a) => a.status !== 200 || a.node !== null)) {
      throw new Error(`cluster bench warm-up: ${JSON.stringify(loaded)}`);
    }
    // Until node 1's board shows b on node 2, node 1 would load b itself (a tie goes to it).
    await waitFor("node 1 to see b resident on node 2", async () => {
      const health = (await getJson(`${one.url}/health`)).body as {
        cluster: { nodes: { node: string; resident_models: { model: string }[] }[] };
      };
      const peer = health.cluster.nodes.find((n) => n.node === two.name);
      return peer?.resident_models.some((r) => r.model === "b") ?? false;
    });
    for (let run = 0; run < runs; run++) {
      for (let i = 0; i < WARM_UP; i++) {
        await ask(two.url);
        await ask(one.url);
      }
      const local: Answer[] = [];
      const forwarded: Answer[] = [];
      for (let i = 0; i < requests; i++) {
        if (i % 2 === 0) {
          local.push(await ask(two.url));
          forwarded.push(await ask(one.url));
        } else {
          forwarded.push(await ask(one.url));
          local.push(await ask(two.url));
        }
      }
      const p = (answers: Answer[], q: number) => round(pct(answers.map((a) => a.ms), q));
      rows.push({
        requests,
        local_p50_ms: p(local, 0.5),
        local_p99_ms: p(local, 0.99),
        forwarded_p50_ms: p(forwarded, 0.5),
        forwarded_p99_ms: p(forwarded, 0.99),
        added_p50_ms: round(p(forwarded, 0.5) - p(local, 0.5)),
        local_ok: local.filter((a) => a.status === 200 && a.node === null).length,
        forwarded_ok: forwarded.filter((a) => a.status === 200 && a.node === two.name).length,
      });
    }
  });
  return rows;
}
