/**
 * `deno task sim TRACE.jsonl…`: replays each trace under every policy and prints swaps, GPU
 * time spent swapping, makespan, and queue waits per priority class, side by side.
 * With no argument it replays the shipped traces in sim/traces/.
 */
import { POLICIES, type PolicyName, PRIORITIES } from "../lib/scheduler.ts";
import { parseTrace, type SimResult, simulate, type Trace, waitStats } from "./simulate.ts";

const s = (ms: number) => `${(ms / 1000).toFixed(1)}`;

export function report(trace: Trace): string {
  const results = Object.entries(POLICIES).map(([name, policy]) =>
    [name as PolicyName, simulate(trace, policy)] as [PolicyName, SimResult]
  );
  const rows: string[][] = [];
  for (const [name, r] of results) {
    for (const priority of PRIORITIES) {
      const w = waitStats(r.waits[priority]);
      if (w.count === 0) continue;
      rows.push([
        name,
        String(r.swaps),
        s(r.swapMs),
        s(r.makespanMs),
        priority,
        String(w.count),
        s(w.mean),
        s(w.p50),
        s(w.p95),
        s(w.max),
      ]);
    }
  }
  const head = [
    "policy",
    "swaps",
    "swap s",
    "makespan s",
    "class",
    "n",
    "wait mean",
    "p50",
    "p95",
    "max",
  ];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    `| ${
      cells.map((c, i) => (i < 1 || i === 4 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(
        " | ",
      )
    } |`;
  const sc = trace.header.scheduler;
  return [
    `### ${trace.header.name}: ${trace.header.description ?? ""}`,
    `${trace.requests.length} requests, ${trace.header.num_workers} workers, max_wait ${sc.max_wait} s, ` +
    `min_residency ${
      sc.min_residency === undefined ? "= load time" : `${sc.min_residency} s`
    }; times in seconds`,
    "",
    line(head),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
    "",
  ].join("\n");
}

if (import.meta.main) {
  let paths = Deno.args;
  if (paths.length === 0) {
    const dir = new URL("./traces/", import.meta.url);
    paths = [...Deno.readDirSync(dir)].map((e) => new URL(e.name, dir).pathname).sort();
  }
  for (const path of paths) console.log(report(parseTrace(await Deno.readTextFile(path))));
}
