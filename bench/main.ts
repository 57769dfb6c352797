/**
 * `deno task bench [--quick] [--runs=N] [--out=PATH]`: what the proxy costs per request, per
 * streamed chunk, per swap and per queued job, measured in one run against the physical limit
 * (the backend directly), against the least a Deno proxy can cost (bench/floor_proxy.ts, and
 * bench/floor_node_proxy.ts on node:http as ours is) and against nginx; and what a hop between
 * two cluster nodes adds (bench/cluster_bench.ts). The request, stream and hop measurements run
 * N rounds (3 by default) and print median (min–max), so one noisy round can neither pass nor
 * fail a target. Prints a table and writes bench/results.json.
 *
 * The backend is our llama-server look-alike in Docker containers (answering at once);
 * nginx runs with `proxy_buffering off` and upstream keep-alive; wrk generates load.
 */
import { parseConfig } from "../lib/config.ts";
import type { DockerApi } from "../lib/docker.ts";
import { silentLogger } from "../lib/log.ts";
import { startProxy } from "../main.ts";
import { requireDocker } from "../tests/support/docker_env.ts";
import { createHomelab, type FakeHomelab } from "../tests/support/fake_models.ts";
import { freePort } from "../demo/free_port.ts";
import { LOOK_ALIKE_PORT } from "../demo/look_alike_image.ts";
import { makeJob } from "../tests/support/jobs.ts";
import { waitFor } from "../tests/support/wait_for.ts";
import {
  cpuOver,
  ensureTools,
  type Nginx,
  pct,
  type ProxyProcess,
  round,
  rssKb,
  startNginx,
  threadCpuMs,
  wrk,
} from "./tools.ts";
import { batchVsSync, storeThroughput } from "./store_bench.ts";
import { hostileConnections } from "./hostile_bench.ts";
import { kvCacheBench } from "./kv_bench.ts";
import { clusterForwarding } from "./cluster_bench.ts";
import { streamClients, type StreamClientsResult } from "./stream_clients.ts";
import process from "node:process";

const quick = Deno.args.includes("--quick");
const runsArg = Deno.args.find((a) => a.startsWith("--runs="));
const outArg = Deno.args.find((a) => a.startsWith("--out="));
const OUT = outArg ? outArg.slice("--out=".length) : new URL("./results.json", import.meta.url);
const SETTINGS = quick
  ? {
    wrkS: 1,
    chunks: 10,
    chunkMs: 10,
    ttfb: 10,
    swaps: 1,
    queueSizes: [10, 100],
    queued: 50,
    storeJobs: 100,
    batchLines: 100,
    hostile: { stalledBig: 50, stalledMany: 300, bodies: 4, bodyMb: 10 },
    kvWords: 2000,
    runs: 1,
    manyStreams: { clients: 50, tokens: 5, tokenMs: 50, arrivalMs: 100 },
    forwarded: 50,
  }
  : {
    wrkS: 5,
    chunks: 100,
    chunkMs: 20,
    // A p50 of 20 first chunks moved 0.2 ms from run to run, as much as the target's margin.
    ttfb: 200,
    swaps: 5,
    queueSizes: [10, 1000, 10000],
    queued: 1000,
    storeJobs: 2000,
    batchLines: 1000,
    hostile: { stalledBig: 50, stalledMany: 3000, bodies: 40, bodyMb: 60 },
    kvWords: 50_000,
    runs: 3,
    // Arrivals over 1 s with 2 s streams: all 1,000 are open together for the second second.
    manyStreams: { clients: 1000, tokens: 20, tokenMs: 100, arrivalMs: 1000 },
    forwarded: 1000,
  };
const RUNS = runsArg ? Math.max(1, Number(runsArg.slice("--runs=".length))) : SETTINGS.runs;
const NUM_WORKERS = 2;
const ROOT = new URL("..", import.meta.url).pathname;

type Row = Record<string, number>;
/** One measurement over several rounds: each field's median, min and max. */
interface Spread {
  median: Row;
  min: Row;
  max: Row;
}

function spreadOf(rounds: Row[]): Spread {
  const out: Spread = { median: {}, min: {}, max: {} };
  for (const field of Object.keys(rounds[0])) {
    const values = rounds.map((r) => r[field]);
    out.median[field] = pct(values, 0.5);
    out.min[field] = Math.min(...values);
    out.max[field] = Math.max(...values);
  }
  return out;
}
const chat = (model: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], ...extra });

/** A `deno run` server of ours on `port`, once it answers /health. */
async function spawnServer(what: string, args: string[], port: number): Promise<ProxyProcess> {
  const child = new Deno.Command("deno", {
    args: ["run", ...args],
    cwd: ROOT,
    stdout: "null",
    stderr: "null",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${what} to listen`, async () => (await fetch(`${url}/health`)).ok);
  return {
    url,
    pid: child.pid,
    async stop() {
      // It may have died already: the error that says why is the one to see, not this one.
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
    },
  };
}

/** The proxy as users run it: its own process, so its CPU and memory can be read. */
async function startProxyProcess(configYaml: string): Promise<ProxyProcess> {
  const port = freePort();
  const path = await Deno.makeTempFile({ suffix: ".yml" });
  await Deno.writeTextFile(path, configYaml.replace("port: 0", `port: ${port}`));
  // With the start task's V8 flag: the proxy asks for collections after big bodies.
  const server = await spawnServer(
    "the proxy",
    ["-A", "--v8-flags=--expose-gc", "main.ts", "--config", path],
    port,
  );
  return { ...server, stop: () => server.stop().then(() => Deno.remove(path)) };
}

// --- 1. per-request overhead -------------------------------------------------------------

/** The floors: bench/floor_proxy.ts (Deno.serve) and bench/floor_node_proxy.ts (node:http). */
function startFloor(script: string, upstream: string): Promise<ProxyProcess> {
  const port = freePort();
  return spawnServer(script, ["--allow-net", script, upstream, String(port)], port);
}

interface Floors {
  deno: ProxyProcess;
  node: ProxyProcess;
}

/** Every target at c=1 and c=NUM_WORKERS, RUNS rounds, each round visiting every target. */
async function overhead(direct: string, nginx: Nginx, floors: Floors, proxy: ProxyProcess) {
  const body = chat("a", { fake_tokens: 1 });
  const own = (p: ProxyProcess) => () => Promise.resolve([p.pid]);
  const targets = {
    direct: { url: `${direct}/v1/chat/completions`, pids: () => Promise.resolve([] as number[]) },
    nginx: { url: `${nginx.url}/v1/chat/completions`, pids: () => nginx.pids() },
    deno_floor: { url: `${floors.deno.url}/v1/chat/completions`, pids: own(floors.deno) },
    node_floor: { url: `${floors.node.url}/v1/chat/completions`, pids: own(floors.node) },
    proxy: { url: `${proxy.url}/v1/chat/completions`, pids: own(proxy) },
  };
  const rounds: Record<string, Row[]> = {};
  for (let run = 0; run < RUNS; run++) {
    for (const connections of [1, NUM_WORKERS]) {
      for (const [name, target] of Object.entries(targets)) {
        await wrk(target.url, body, connections, 1); // warm-up (JIT, connections)
        const pids = await target.pids();
        const [result, cpu] = await cpuOver(
          pids,
          () => wrk(target.url, body, connections, SETTINGS.wrkS),
        );
        const row: Row = {
          requests: result.requests,
          p50Ms: result.p50Ms,
          p99Ms: result.p99Ms,
          p99_corrected_ms: result.p99CorrectedMs,
          // Non-2xx answers and socket errors: a round with any measured failures too.
          errors: result.errors,
        };
        if (pids.length) row.cpu_ms_per_request = round(cpu / result.requests, 4);
        (rounds[`${name}_c${connections}`] ??= []).push(row);
      }
    }
  }
  return Object.fromEntries(Object.entries(rounds).map(([key, rows]) => [key, spreadOf(rows)]));
}

// --- 2. streaming relay --------------------------------------------------------------------

async function streamOnce(url: string, chunks: number, chunkMs: number) {
  const started = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: chat("a", {
      stream: true,
      fake_stamp: true,
      fake_tokens: chunks,
      fake_token_ms: chunkMs,
    }),
  });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const delays: number[] = [];
  let ttfb = -1;
  let reads = 0;
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const now = performance.timeOrigin + performance.now();
    if (ttfb < 0) ttfb = performance.now() - started;
    reads++;
    buffer += value;
    const events = buffer.split("\n\n");
    buffer = events.pop()!;
    for (const event of events) {
      const stamp = /"content":"(\d+\.?\d*)"/.exec(event)?.[1];
      if (stamp) delays.push(now - Number(stamp));
    }
  }
  return { delays, ttfb, reads };
}

async function streaming(direct: string, nginx: Nginx, floors: Floors, proxy: ProxyProcess) {
  const targets = {
    direct,
    nginx: nginx.url,
    deno_floor: floors.deno.url,
    node_floor: floors.node.url,
    proxy: proxy.url,
  };
  const rounds: Record<string, Row[]> = {};
  for (let run = 0; run < RUNS; run++) {
    for (const [name, url] of Object.entries(targets)) {
      const delays: number[] = [];
      let reads = 0;
      let events = 0;
      await streamOnce(url, 5, 1); // warm-up
      for (let i = 0; i < 3; i++) {
        const r = await streamOnce(url, SETTINGS.chunks, SETTINGS.chunkMs);
        delays.push(...r.delays);
        reads += r.reads;
        events += r.delays.length;
      }
      const ttfbs = [];
      for (let i = 0; i < SETTINGS.ttfb; i++) ttfbs.push((await streamOnce(url, 1, 0)).ttfb);
      (rounds[name] ??= []).push({
        chunk_delay_p50_ms: round(pct(delays, 0.5)),
        chunk_delay_p99_ms: round(pct(delays, 0.99)),
        ttfb_p50_ms: round(pct(ttfbs, 0.5)),
        content_chunks: events,
        reads,
      });
    }
  }
  return Object.fromEntries(Object.entries(rounds).map(([key, rows]) => [key, spreadOf(rows)]));
}

/**
 * Many clients streaming from one model at once (the look-alike's slow tokens): does every
 * stream arrive whole, how late are its chunks, and what does holding them cost in memory?
 * Two arrival patterns, each round: every stream opened at once, and the streams arriving
 * over `arrivalMs` as users do. At once, the look-alike sends each token of all 1,000
 * streams within a few milliseconds, so a chunk's delay is mostly its place in that burst.
 */
export async function manyStreams(api: DockerApi, settings = SETTINGS.manyStreams) {
  const { clients, tokens, tokenMs, arrivalMs } = settings;
  const lab = await createHomelab(api, [{
    id: "s",
    slots: clients,
    tokenMs,
    loadMs: 300,
    record: false,
    watch: false,
  }]);
  let proxy: ProxyProcess | null = null;
  try {
    const configYaml = lab.configYaml(
      `num_workers: ${clients}\nqueue_size: ${clients}\nmax_connections: ${clients * 2}\n` +
        "store:\n  type: memory",
    );
    const warm = async (p: ProxyProcess) => {
      const res = await fetch(`${p.url}/v1/chat/completions`, { method: "POST", body: chat("s") });
      const text = await res.text();
      if (!res.ok) throw new Error(`many streams: the first request got ${res.status}: ${text}`);
    };
    proxy = await startProxyProcess(configYaml);
    await warm(proxy);
    // The clients run in a process of their own on raw sockets (bench/stream_clients.ts): as
    // fetch streams in this process they were most of the delay they measured.
    const all = (url: string, spreadMs: number) =>
      streamClients({ url, clients, tokens, tokenMs, model: "s", spreadMs }).then((r) => {
        if (r.firstError) console.error(`many streams, ${url}: ${r.firstError}`);
        return r;
      });
    // One path's fields of a row, named as the report reads them back (`delays(prefix)`).
    const delayFields = (prefix: string, r: StreamClientsResult): Row => ({
      [`${prefix}complete`]: r.complete,
      [`${prefix}chunk_delay_p50_ms`]: round(pct(r.delays, 0.5)),
      [`${prefix}chunk_delay_p99_ms`]: round(pct(r.delays, 0.99)),
      [`${prefix}held_open_p99_ms`]: round(pct(r.heldOpenDelays, 0.99)),
    });
    // What holding the streams takes is read against the proxy's RSS before the first round: a
    // later round starts with the heap the earlier ones grew, and against its own start read
    // 1-2 KB per stream.
    const idleKb = await rssKb(proxy.pid);
    /** The same clients straight to the backend at `direct`, through the floor, then `via`. */
    const measure = async (spreadMs: number, direct: string, via: ProxyProcess): Promise<Row> => {
      // The same clients straight to the look-alike first: what the machine itself adds.
      const straight = await all(direct, spreadMs);
      /** The same clients through a reference relay of its own, new for the round. */
      const through = async (script: string) => {
        const relay = await startFloor(script, direct);
        return await cpuOver([relay.pid], () => all(relay.url, spreadMs))
          .finally(() => relay.stop());
      };
      // Then through the bare Deno.serve + fetch passthrough: what any proxy on this runtime
      // adds to the same streams.
      const [floored, floorCpuMs] = await through("bench/floor_proxy.ts");
      // And through the least relay written in JavaScript on Deno.listen, as the proxy is: what
      // this runtime's async reads and writes cost, without the proxy's own work.
      const [relayed, jsRelayCpuMs] = await through("bench/floor_js_relay.ts");
      const startKb = await rssKb(via.pid);
      let peakKb = startKb;
      const sampler = setInterval(() => {
        rssKb(via.pid).then((kb) => peakKb = Math.max(peakKb, kb), () => {});
      }, 100);
      const [proxied, proxyCpuMs] = await cpuOver([via.pid], () => all(via.url, spreadMs))
        .finally(() => clearInterval(sampler));
      return {
        clients,
        ...delayFields("", proxied),
        ...delayFields("direct_", straight),
        ...delayFields("deno_floor_", floored),
        ...delayFields("js_relay_", relayed),
        // The work behind the delays, far steadier than their p99 from one round to the next.
        cpu_us_per_stream: Math.round(proxyCpuMs * 1000 / clients),
        deno_floor_cpu_us_per_stream: Math.round(floorCpuMs * 1000 / clients),
        js_relay_cpu_us_per_stream: Math.round(jsRelayCpuMs * 1000 / clients),
        client_cpu_ms: proxied.clientCpuMs,
        direct_client_cpu_ms: straight.clientCpuMs,
        rss_before_mb: round(startKb / 1024, 1),
        rss_peak_mb: round(peakKb / 1024, 1),
        rss_kb_per_stream: Math.round((peakKb - idleKb) / clients),
      };
    };
    // One round was as noisy as the target's margin: straight to the backend, its p99 moved
    // between 18 and 48 ms from one full run to the next.
    const published = `127.0.0.1:${lab.hostPort}`;
    const atOnce: Row[] = [], arriving: Row[] = [];
    for (let run = 0; run < RUNS; run++) {
      atOnce.push(await measure(0, `http://${published}`, proxy));
      arriving.push({
        ...await measure(arrivalMs, `http://${published}`, proxy),
        arrival_ms: arrivalMs,
      });
    }
    const parts: Record<string, Spread> = {
      at_once: spreadOf(atOnce),
      arriving: spreadOf(arriving),
    };
    // Every path above reaches the look-alike on its published port, as users' backend_url
    // does. Unless the daemon runs with `"userland-proxy": false`, that port is Docker's
    // docker-proxy, a process of its own that copies every byte of every path on the same 2
    // cores: with it the p99 straight to the backend and through the Deno floor rose 1.3-1.5x
    // in full runs. The same streams on the container's own address show what is left without
    // it, and so what is the proxy's own.
    const own = await containerAddress(api, lab.containerOf("s"));
    if (own === null) return parts;
    if (!configYaml.includes(published)) {
      throw new Error(`many streams: the config does not name ${published}; nothing to move`);
    }
    const portProxied = await dockerProxyServes(lab.hostPort);
    await proxy.stop();
    proxy = null;
    proxy = await startProxyProcess(configYaml.replaceAll(published, own));
    await warm(proxy);
    // Only the delays: the RSS fields would be read against the first proxy process's idle.
    const kept = [
      ...["", "direct_", "deno_floor_", "js_relay_"].flatMap((prefix) =>
        ["complete", "chunk_delay_p50_ms", "chunk_delay_p99_ms", "held_open_p99_ms"].map((f) =>
          `${prefix}${f}`
        )
      ),
      "cpu_us_per_stream",
      "deno_floor_cpu_us_per_stream",
      "js_relay_cpu_us_per_stream",
    ];
    const ownRows: Row[] = [];
    for (let run = 0; run < RUNS; run++) {
      const row = await measure(arrivalMs, `http://${own}`, proxy);
      ownRows.push({
        ...Object.fromEntries(kept.map((field) => [field, row[field]])),
        clients,
        arrival_ms: arrivalMs,
        // 1 served, 0 did not, -1 unknown (no pgrep, or dockerd in another PID namespace).
        docker_proxy_on_published_port: portProxied === null ? -1 : portProxied ? 1 : 0,
      });
    }
    return { ...parts, arriving_own_address: spreadOf(ownRows) };
  } finally {
    await proxy?.stop();
    await lab.remove();
  }
}

/** A container's address on its first network with its port, when this host reaches it. */
async function containerAddress(api: DockerApi, name: string): Promise<string | null> {
  const info = await (await api.call("GET", `/containers/${name}/json`)).json();
  const networks = Object.values(info.NetworkSettings?.Networks ?? {}) as { IPAddress?: string }[];
  const ip = networks.map((n) => n.IPAddress).find((a) => a);
  if (!ip) return null;
  const address = `${ip}:${LOOK_ALIKE_PORT}`;
  try {
    const res = await fetch(`http://${address}/health`, { signal: AbortSignal.timeout(1000) });
    await res.body?.cancel();
    return res.ok ? address : null;
  } catch {
    return null; // not routable from the host (Docker Desktop, rootless Docker)
  }
}

/**
 * Whether a docker-proxy process serves `port` (the daemon's userland proxy is on); null when
 * this cannot tell (no pgrep).
 */
async function dockerProxyServes(port: number): Promise<boolean | null> {
  const out = await new Deno.Command("pgrep", {
    args: ["-f", `docker-proxy .*-host-port ${port} `],
    stdout: "null",
  }).output().catch(() => null);
  // pgrep: 0 found, 1 none, 2 and above its own trouble.
  return out === null || out.code > 1 ? null : out.success;
}

// --- 3. swap overhead --------------------------------------------------------------------

/** What a swap costs without the proxy: stop, start, tight health poll, first byte. */
async function manualSwap(baseline: FakeHomelab, api: DockerApi, from: string, to: string) {
  const started = performance.now();
  for (const [name, action] of [[from, "stop?t=10"], [to, "start"]]) {
    const path = `/containers/${baseline.containerOf(name)}/${action}`;
    await (await api.call("POST", path)).body?.cancel();
  }
  const base = `http://127.0.0.1:${baseline.hostPort}`;
  for (;;) {
    try {
      const res = await fetch(`${base}/health`, { signal: AbortSignal.timeout(200) });
      if (res.status === 200) {
        await res.body?.cancel();
        break;
      }
      await res.body?.cancel();
    } catch {
      // not yet
    }
  }
  await swappedTo(base, to);
  return performance.now() - started;
}

/**
 * One token from `model` at `base`, which is what ends a swap. A fast error is no swap: it
 * would pass for one, so it fails the part.
 */
async function swappedTo(base: string, model: string): Promise<void> {
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    body: chat(model, { fake_tokens: 1 }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`swap to ${model} at ${base}: ${res.status} ${text}`);
}

/**
 * The proxy's swaps against the same swaps by hand, interleaved, in RUNS rounds. A round's
 * share is the difference of its two medians; one round of five pairs moved by 10-15 ms
 * from run to run (the by-hand swap alone by 12-24 ms in one hour), as much as the target's
 * margin, so the target reads the median of the rounds.
 */
async function swaps(
  api: DockerApi,
  baseline: FakeHomelab,
  proxy: ProxyProcess,
): Promise<Spread> {
  await baseline.start("c");
  await waitFor("baseline up", async () => (await baseline.state()).alias === "c");
  const rounds: Row[] = [];
  for (let run = 0; run < RUNS; run++) {
    const viaProxy: number[] = [];
    const manual: number[] = [];
    for (let i = 0; i < SETTINGS.swaps; i++) {
      for (const model of ["b", "a"]) {
        const started = performance.now();
        await swappedTo(proxy.url, model);
        viaProxy.push(performance.now() - started);
      }
      manual.push(await manualSwap(baseline, api, "c", "d"));
      manual.push(await manualSwap(baseline, api, "d", "c"));
    }
    rounds.push({
      proxy_swap_p50_ms: round(pct(viaProxy, 0.5), 1),
      manual_swap_p50_ms: round(pct(manual, 0.5), 1),
      proxy_share_ms: round(pct(viaProxy, 0.5) - pct(manual, 0.5), 1),
    });
  }
  return spreadOf(rounds);
}

// --- 4. memory of the proxy process --------------------------------------------------------

async function memory(proxy: ProxyProcess, lab: FakeHomelab, startKb: number) {
  const afterLoadKb = await rssKb(proxy.pid);
  const held = [0, 1].map(() =>
    fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      body: chat("a", { stream: true, fake_hold: true, fake_tokens: 2 }),
    }).then((r) => r.text())
  );
  await waitFor("two streams held", async () => (await lab.state()).inflight === 2);
  const queued = Array.from(
    { length: SETTINGS.queued },
    () =>
      fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        body: chat("a", { fake_tokens: 1 }),
      })
        .then((r) => r.text()),
  );
  await waitFor("requests queued", async () => {
    const m = await (await fetch(`${proxy.url}/metrics`)).json();
    return m.queue_stats.pending_jobs === SETTINGS.queued;
  }, { timeoutMs: 60_000 });
  const loadedKb = await rssKb(proxy.pid);
  // The queue part below measures idle in this process, where it can hold 10,000 jobs; this
  // is the proxy as users run it, with its config file watched, while nothing moves. Measured
  // as there: once the arrivals settled, the median of the steady windows.
  await new Promise((r) => setTimeout(r, FIRST_IDLE_MS));
  const idle = await steadyIdleCpuMs(() => threadCpuMs(proxy.pid));
  await lab.release();
  await Promise.all([...held, ...queued]);
  return {
    start_rss_mb: round(startKb / 1024, 1),
    after_load_rss_mb: round(afterLoadKb / 1024, 1),
    busy_rss_mb: round(loadedKb / 1024, 1),
    busy_idle_cpu_ms_per_s: round(idle.median, 2),
  };
}

// --- 5. queue scale, in-process ------------------------------------------------------------

/** How long the proxy is watched settling right after the burst (the first idle window). */
const FIRST_IDLE_MS = 3000;
/**
 * How long each steady window lasts: long enough to hold several of whatever still wakes an
 * idle proxy wherever the window starts. On the default store that is Deno KV's own thread
 * every ~2 s and the batch runner's look every 30 s; before the KV file was taken over rather
 * than leased (69ad0c9) it was also the lease heartbeat every 5 s and recovery every 7.5 s,
 * and a 3 s window read ~0.7 or ~1.5 ms/s by the chance of holding a recovery. The quick run
 * only checks that the part works.
 */
const STEADY_IDLE_MS = quick ? 3000 : 15_000;
/**
 * Steady windows in a row, and the median of them is the figure. V8's memory reducer collects
 * the heap two or three times once allocation stops (8-30 s after the last collection, the
 * proxy's memory release; ~30-50 ms of CPU each with 10,000 jobs): a settling cost, not a
 * steady one, which fell in one of three windows and read 14.5 ms/s there against 4.4-6.5 in
 * the others. The quick run only checks that the part works.
 */
const STEADY_WINDOWS = quick ? 1 : 3;

/**
 * CPU time (ms) of this whole process (every thread) so far: getrusage's microseconds, where
 * /proc's 10 ms ticks cannot tell 2 ms/s from nothing.
 */
function ownCpuMs(): Promise<number> {
  const { user, system } = process.cpuUsage();
  return Promise.resolve((user + system) / 1000);
}

/**
 * The median of `STEADY_WINDOWS` idle windows of `STEADY_IDLE_MS`, and each window, as
 * `readCpuMs` reads the CPU time.
 */
async function steadyIdleCpuMs(
  readCpuMs = ownCpuMs,
): Promise<{ median: number; windows: number[] }> {
  const windows: number[] = [];
  for (let i = 0; i < STEADY_WINDOWS; i++) {
    windows.push(await idleCpuMs(STEADY_IDLE_MS, readCpuMs));
  }
  return { median: pct(windows, 0.5), windows };
}

/** CPU per second of `ms` doing nothing, in ms, as `readCpuMs` reads the CPU time. */
async function idleCpuMs(ms: number, readCpuMs = ownCpuMs): Promise<number> {
  const before = await readCpuMs();
  await new Promise((r) => setTimeout(r, ms));
  return (await readCpuMs() - before) / (ms / 1000);
}

async function queueScale(configYaml: string, lab: FakeHomelab) {
  const config = parseConfig(configYaml.replace(/num_workers: \d+/, "num_workers: 1"), "bench");
  // What this process costs doing nothing before the proxy is in it, measured the same way:
  // on some machines a timer's wake alone costs milliseconds of CPU (a bare Deno process
  // waking every 3 s read 1.2-2.2 ms/s on one), and a reader of the proxy's figure needs it.
  const withoutProxy = await steadyIdleCpuMs();
  const proxy = await startProxy(config, { log: silentLogger });
  const out: Record<string, Record<string, number>> = {};
  try {
    await (await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", body: chat("a") }))
      .text();
    const held = fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      body: chat("a", { fake_hold: true }),
    }).then((r) => r.text());
    await waitFor("worker held", async () => (await lab.state()).inflight === 1);
    const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
    for (const n of SETTINGS.queueSizes) {
      gc();
      const before = Deno.memoryUsage();
      const jobs = Array.from({ length: n }, () => makeJob("a", { now: Date.now() }));
      const admitStart = performance.now();
      for (const { job } of jobs) proxy.dispatcher.submit(job);
      const admitUs = ((performance.now() - admitStart) * 1000) / n;
      // The store records follow in the background: their cost is reported on its own, and
      // the idle measurement starts once they are written.
      await proxy.storeSettled();
      const storeUs = ((performance.now() - admitStart) * 1000) / n - admitUs;
      gc();
      const atOnce = Deno.memoryUsage();
      // Every pump decides with n jobs waiting and the only worker busy: five batches of 1,000
      // now, five after each idle window below, and the median of the fifteen. V8's workers
      // sweep after the gc() above (10-30 ms at 10,000 jobs) on one of the two cores, and
      // one batch beside them read 3x the others; and in a process of its own, with nothing
      // else changing, batches at one size moved between 0.4 and 4 µs over a few seconds. Five
      // batches at once made the ratio of the sizes read 0.6x to 2.6x from run to run.
      const batches: number[] = [];
      const pumpBatches = () => {
        for (let batch = 0; batch < 5; batch++) {
          const pumpStart = performance.now();
          for (let i = 0; i < 1000; i++) proxy.dispatcher.pump();
          batches.push(performance.now() - pumpStart);
        }
      };
      pumpBatches();
      // Idle is measured in two parts. The first window starts right after the burst and
      // sees the process settle: the sweeping of the gc() above on V8's worker threads (10-30
      // ms at 10,000 jobs) and, after 2,000 admissions or more, the proxy's one memory
      // release once they stopped (lib/memory_release.ts, ~110-160 ms). The steady windows
      // after it (STEADY_WINDOWS) are what the target is about: what 10,000 waiting jobs cost
      // while nothing happens. RSS is read likewise: right after the burst (the release comes
      // a second after the last admission, usually after this reading, as the store takes ~1
      // s to settle 10,000 records), and settled, after the steady windows (so that that
      // gc()'s sweeping stays out of all of them).
      const firstIdleCpuMs = await idleCpuMs(FIRST_IDLE_MS);
      pumpBatches();
      const steady = await steadyIdleCpuMs();
      pumpBatches();
      const dispatchUs = pct(batches, 0.5); // ms per 1,000 pumps: µs per pump
      gc();
      const settled = Deno.memoryUsage();
      const cancelStart = performance.now();
      for (const { disconnect } of jobs) disconnect();
      const cancelUs = ((performance.now() - cancelStart) * 1000) / n;
      await proxy.storeSettled();
      out[String(n)] = {
        admission_us: round(admitUs, 2),
        store_write_us: round(storeUs, 2),
        dispatch_decision_us: round(dispatchUs, 2),
        rss_bytes_per_job: Math.round((settled.rss - before.rss) / n),
        rss_bytes_per_job_at_once: Math.round((atOnce.rss - before.rss) / n),
        heap_bytes_per_job: Math.round((settled.heapUsed - before.heapUsed) / n),
        idle_cpu_ms_per_s: round(steady.median, 2),
        idle_cpu_window_min_ms_per_s: round(Math.min(...steady.windows), 2),
        idle_cpu_window_max_ms_per_s: round(Math.max(...steady.windows), 2),
        idle_cpu_first_ms_per_s: round(firstIdleCpuMs, 2),
        cancel_us: round(cancelUs, 2),
      };
    }
    await lab.release();
    await held;
  } finally {
    await proxy.close(2000);
  }
  return { bySize: out, idleWithoutProxyMsPerS: round(withoutProxy.median, 2) };
}

// --- main ------------------------------------------------------------------------------------

async function main() {
  await ensureTools();
  const api = await requireDocker();
  const fast = { slots: 4, tokenMs: 0, loadMs: 300, record: false, watch: false } as const;
  const lab = await createHomelab(api, [{ id: "a", ...fast }, { id: "b", ...fast }]);
  const baseline = await createHomelab(api, [{ id: "c", ...fast }, { id: "d", ...fast }]);
  // The default store (KV on disk), in a temp dir rather than the source tree's data/.
  const storeDir = await Deno.makeTempDir({ prefix: "lqp-bench-" });
  const configYaml = lab.configYaml(
    `num_workers: ${NUM_WORKERS}\nqueue_size: 20000\nstore:\n  path: ${storeDir}/jobs.sqlite`,
  );
  const direct = `http://127.0.0.1:${lab.hostPort}`;
  let proxy: ProxyProcess | null = null;
  let nginx: Nginx | null = null;
  let floors: Floors | null = null;
  const results: Record<string, unknown> = {
    machine:
      `${Deno.build.os} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores, deno ${Deno.version.deno}`,
    quick,
    runs: RUNS,
    date: new Date().toISOString(),
  };
  try {
    proxy = await startProxyProcess(configYaml);
    await (await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", body: chat("a") }))
      .text();
    const startKb = await rssKb(proxy.pid);
    nginx = await startNginx(freePort(), `127.0.0.1:${lab.hostPort}`);
    floors = {
      deno: await startFloor("bench/floor_proxy.ts", direct),
      node: await startFloor("bench/floor_node_proxy.ts", direct),
    };
    results.overhead = await overhead(direct, nginx, floors, proxy);
    results.streaming = await streaming(direct, nginx, floors, proxy);
    results.memory = await memory(proxy, lab, startKb);
    results.swap = await swaps(api, baseline, proxy);
    results.kv_cache = await kvCacheBench(api, startProxyProcess, SETTINGS.kvWords);
    await proxy.stop();
    proxy = null;
    // Its own process: one worker to hold, and room for every big body. Generous header and
    // body timeouts: this part measures memory, and this process's fetch blocks its own event
    // loop for 15-30 s while it starts 40 uploads of 60 MB, so some connections send their
    // headers more than the default 10 s after connecting; the proxy then rightly answers 408,
    // which fetch reports as "received unexpected message from connection".
    proxy = await startProxyProcess(lab.configYaml(
      "num_workers: 1\nmax_queued_bytes: 16gb\nheader_timeout: 120\nbody_timeout: 600\n" +
        "store:\n  type: memory",
    ));
    await (await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", body: chat("a") }))
      .text();
    results.hostile = await hostileConnections(
      { url: proxy.url, port: Number(new URL(proxy.url).port), pid: proxy.pid },
      lab,
      SETTINGS.hostile,
    );
    await proxy.stop();
    proxy = null;
    // The swap part may have left b loaded; the in-process proxy adopts whatever runs.
    const queue = await queueScale(configYaml, lab);
    results.queue = queue.bySize;
    results.idle_without_proxy_ms_per_s = queue.idleWithoutProxyMsPerS;
    results.many_streams = await manyStreams(api);
    results.store = await storeThroughput(SETTINGS.storeJobs);
    results.batch = await batchVsSync(
      lab.configYaml(`num_workers: ${NUM_WORKERS}`),
      SETTINGS.batchLines,
      NUM_WORKERS,
    );
    results.cluster_forwarding = spreadOf(await clusterForwarding(SETTINGS.forwarded, RUNS));
  } finally {
    await proxy?.stop();
    await nginx?.stop();
    await floors?.deno.stop();
    await floors?.node.stop();
    await lab.remove();
    await baseline.remove();
    await Deno.remove(storeDir, { recursive: true });
    api.close();
  }
  await Deno.writeTextFile(OUT, JSON.stringify(results, null, 2) + "\n");
  console.log(report(results));
}

/** The table and the targets of the issue, each with its verdict. */
function report(r: Record<string, unknown>): string {
  const o = r.overhead as Record<string, Spread>;
  const s = r.streaming as Record<string, Spread>;
  const sw = r.swap as Spread;
  const q = r.queue as Record<string, Row>;
  const m = r.memory as Row;
  const runs = r.runs as number;
  const lines = [
    `machine: ${r.machine}${r.quick ? " (quick run: numbers are rough)" : ""}`,
    `request and stream rows: median (min–max) of ${runs} round${runs === 1 ? "" : "s"}`,
    "",
  ];
  const checks: [string, boolean][] = [];
  /** "median (min–max)", or just the value when every round agreed. */
  const cell = (x: Spread, field: string) => {
    const [mid, lo, hi] = [x.median[field], x.min[field], x.max[field]];
    return lo === hi ? `${mid}` : `${mid} (${lo}–${hi})`;
  };
  const targets = ["direct", "nginx", "deno_floor", "node_floor", "proxy"];
  lines.push(
    "| c | " + targets.map((t) => `${t} p50 ms | ${t} p99 ms`).join(" | ") +
      " | CPU/req ms: deno floor | node:http floor | proxy | nginx |",
  );
  lines.push(`|${" --- |".repeat(1 + targets.length * 2 + 4)}`);
  const afterTable: string[] = [];
  for (const c of [1, NUM_WORKERS]) {
    const at = (t: string) => o[`${t}_c${c}`];
    const cells = [`${c}`];
    for (const t of targets) cells.push(cell(at(t), "p50Ms"), cell(at(t), "p99Ms"));
    for (const t of ["deno_floor", "node_floor", "proxy", "nginx"]) {
      cells.push(cell(at(t), "cpu_ms_per_request"));
    }
    lines.push(`| ${cells.join(" | ")} |`);
    const d = at("direct").median, f = at("deno_floor").median, p = at("proxy").median;
    const cpu = p.cpu_ms_per_request / Math.max(1e-6, f.cpu_ms_per_request);
    // The floor's own addition can be within noise of zero: compare against at least 0.05 ms.
    const addedP50 = (p.p50Ms - d.p50Ms) / Math.max(0.05, f.p50Ms - d.p50Ms);
    checks.push([
      `c=${c}: CPU per request ≤ 1.5x the Deno floor's (${cpu.toFixed(2)}x)`,
      cpu <= 1.5,
    ]);
    checks.push([
      `c=${c}: added p50 ≤ 1.5x the Deno floor's (${addedP50.toFixed(2)}x)`,
      addedP50 <= 1.5,
    ]);
    if (c === NUM_WORKERS) {
      const p99 = p.p99Ms / Math.max(0.05, f.p99Ms);
      checks.push([`c=${c}: p99 ≤ 2x the Deno floor's (${p99.toFixed(2)}x)`, p99 <= 2]);
      // Not a target: wrk's p99 after its coordinated-omission correction, which weighs each
      // stall by its length (see RAW_LATENCIES in bench/tools.ts). Shown, as earlier runs
      // reported it as the p99.
      const corrected = p.p99_corrected_ms / Math.max(0.05, f.p99_corrected_ms);
      afterTable.push(
        `c=${c}: wrk's corrected p99: proxy ${cell(at("proxy"), "p99_corrected_ms")} ms, ` +
          `Deno floor ${cell(at("deno_floor"), "p99_corrected_ms")} ms (${
            corrected.toFixed(2)
          }x; info)`,
      );
    }
  }
  const failing = Object.entries(o).filter(([, x]) => (x.max.errors ?? 0) > 0).map(([k]) => k);
  checks.push([
    `every request of the rounds above answered 2xx, no socket errors (${
      failing.length === 0 ? "all" : `errors in ${failing.join(", ")}`
    })`,
    failing.length === 0,
  ]);
  lines.push("", ...afterTable);
  lines.push("");
  lines.push("| stream | chunk delay p50 ms | p99 ms | TTFB p50 ms | chunks / reads |");
  lines.push("| --- | --- | --- | --- | --- |");
  for (const name of targets) {
    const x = s[name];
    lines.push(
      `| ${name} | ${cell(x, "chunk_delay_p50_ms")} | ${cell(x, "chunk_delay_p99_ms")} | ` +
        `${cell(x, "ttfb_p50_ms")} | ${x.median.content_chunks} / ${x.median.reads} |`,
    );
  }
  const sp = s.proxy.median, sd = s.direct.median, sf = s.deno_floor.median;
  const addedChunkP99 = sp.chunk_delay_p99_ms - sd.chunk_delay_p99_ms;
  checks.push([
    `streaming: added chunk delay p99 ≤ 1 ms (${addedChunkP99.toFixed(3)} ms)`,
    addedChunkP99 <= 1,
  ]);
  const ttfbOver = sp.ttfb_p50_ms - sf.ttfb_p50_ms;
  checks.push([
    `streaming: TTFB ≤ the Deno floor's + 0.3 ms (+${ttfbOver.toFixed(3)} ms)`,
    ttfbOver <= 0.3,
  ]);
  checks.push([
    `streaming: no coalescing (${sp.reads} reads for ${sp.content_chunks} chunks, direct ${sd.reads})`,
    sp.reads >= sd.reads * 0.98,
  ]);
  const manyParts = r.many_streams as Record<
    "at_once" | "arriving" | "arriving_own_address",
    Spread | undefined
  >;
  // The p99 "held open" is of the chunks sent while all the streams were open: without the
  // arrivals' work (connections, heads, bodies, queueing, backend requests) in the same second.
  const delaysIn = (s: Spread, prefix: string) =>
    `chunk delay p50 ${cell(s, `${prefix}chunk_delay_p50_ms`)} ms, p99 ${
      cell(s, `${prefix}chunk_delay_p99_ms`)
    } ms (held open ${cell(s, `${prefix}held_open_p99_ms`)} ms)`;
  // A chunk's delay rises with the relay's work in the bursts it meets; the work itself moves
  // far less from round to round than the delay's p99. The floor's process is new each round
  // (its code cold), as the proxy's is not.
  const cpuPerStream = (s: Spread) => {
    const ratio = s.median.cpu_us_per_stream / s.median.deno_floor_cpu_us_per_stream;
    return `CPU per stream with its ${SETTINGS.manyStreams.tokens} chunks: proxy ` +
      `${cell(s, "cpu_us_per_stream")} µs, the Deno floor ${
        cell(s, "deno_floor_cpu_us_per_stream")
      } µs (${ratio.toFixed(2)}x), the least JavaScript relay on Deno.listen ${
        cell(s, "js_relay_cpu_us_per_stream")
      } µs`;
  };
  lines.push("");
  for (const part of ["at_once", "arriving"] as const) {
    const manySpread = manyParts[part]!;
    const many = manySpread.median;
    const spread = (field: string) => cell(manySpread, field);
    const how = part === "at_once" ? "at once" : `arriving over ${many.arrival_ms} ms`;
    const delays = (prefix: string) =>
      `complete ${spread(`${prefix}complete`)}, ${delaysIn(manySpread, prefix)}`;
    lines.push(
      `${many.clients} streams ${how} on one model, ${RUNS} rounds: ${delays("")} (straight to ` +
        `the backend: ${delays("direct_")}; through the Deno floor: ${delays("deno_floor_")}; ` +
        `through the least JavaScript relay: ${delays("js_relay_")}); ` +
        `proxy RSS ${spread("rss_before_mb")} → peak ${spread("rss_peak_mb")} MB ` +
        `(${spread("rss_kb_per_stream")} KB per stream over the idle proxy)`,
    );
    // The target below is the issue's, on the whole delay; on a busy 2-core machine that holds
    // what the machine adds without the proxy too (the row straight to the backend, which
    // moves with other load), and what any relay on this runtime adds (the floor's row). The
    // differences are the proxy's own part, the one work on the proxy moves.
    const beyond = (field: string, base: string) => {
      const ms = round(many[field] - many[`${base}${field}`]);
      return `${ms < 0 ? "" : "+"}${ms} ms`;
    };
    lines.push(
      `  the proxy's p99 (medians): ${beyond("chunk_delay_p99_ms", "direct_")} over the backend ` +
        `straight, ${beyond("chunk_delay_p99_ms", "deno_floor_")} over the Deno floor; p50 ` +
        `${beyond("chunk_delay_p50_ms", "direct_")} over the backend (the client's CPU: ` +
        `${many.client_cpu_ms} ms for ${many.clients} streams); ${cpuPerStream(manySpread)}`,
    );
    checks.push([
      `${many.clients} concurrent streams ${how}: every one complete in every round ` +
      `(${manySpread.min.complete})`,
      manySpread.min.complete === many.clients,
    ]);
    checks.push([
      `${many.clients} concurrent streams ${how}: chunk delay p99 ≤ 5 ms (${
        spread("chunk_delay_p99_ms")
      } ms)`,
      many.chunk_delay_p99_ms <= 5,
    ]);
  }
  const own = manyParts.arriving_own_address;
  lines.push(
    own === undefined
      ? "  the container's own address is not reachable from this host: no row without Docker's " +
        "port proxy"
      : `  the same, arriving, on the container's own address (no docker-proxy; it ${
        ["may or may not have served", "did not serve", "served"][
          own.median.docker_proxy_on_published_port + 1
        ]
      } the published port above): proxy ${delaysIn(own, "")}; straight to the backend ${
        delaysIn(own, "direct_")
      }; through the Deno floor ${delaysIn(own, "deno_floor_")}; through the least JavaScript ` +
        `relay ${delaysIn(own, "js_relay_")}; ${cpuPerStream(own)}`,
  );
  lines.push("");
  lines.push(
    `swap A→B, p50 ms, median (min–max) of ${runs} round${runs === 1 ? "" : "s"}: via proxy ${
      cell(sw, "proxy_swap_p50_ms")
    }, by hand ${cell(sw, "manual_swap_p50_ms")}, proxy's share ${cell(sw, "proxy_share_ms")}`,
  );
  checks.push([
    `swap: the proxy's share ≤ 20 ms (${cell(sw, "proxy_share_ms")} ms)`,
    sw.median.proxy_share_ms <= 20,
  ]);
  const kv = r.kv_cache as Row;
  lines.push(
    `kv_cache warm return: ${kv.tokens} tokens, ${kv.save_mb} MB of save files; save ${kv.save_ms} ms + ` +
      `restore ${kv.restore_ms} ms (${kv.ms_per_gb} ms per GB); the return answered in ` +
      `${kv.return_warm_ms} ms against ${kv.return_cold_ms} ms cold (prompt time saved ${kv.prompt_ms_saved} ms)`,
  );
  lines.push("");
  lines.push(
    "| waiting jobs | admission µs | store write µs (background) | dispatch decision µs | RSS bytes/job settled (at once) | heap bytes/job | idle CPU ms/s steady, median of windows (first 3 s) | cancel µs |",
  );
  lines.push("| --- | --- | --- | --- | --- | --- | --- | --- |");
  const sizes = Object.keys(q).map(Number).sort((a, b) => a - b);
  // With a few jobs the process's RSS moves more than they take (a collection may shrink it).
  const perJob = (bytes: number) => bytes < 0 ? "(RSS fell)" : String(bytes);
  for (const n of sizes) {
    const x = q[String(n)];
    lines.push(
      `| ${n} | ${x.admission_us} | ${x.store_write_us} | ${x.dispatch_decision_us} | ${
        perJob(x.rss_bytes_per_job)
      } (${
        perJob(x.rss_bytes_per_job_at_once)
      }) | ${x.heap_bytes_per_job} | ${x.idle_cpu_ms_per_s} (${x.idle_cpu_first_ms_per_s}) | ${x.cancel_us} |`,
    );
  }
  const small = q[String(sizes[0])], big = q[String(sizes.at(-1))];
  const dispatchRatio = big.dispatch_decision_us / Math.max(1e-3, small.dispatch_decision_us);
  checks.push([
    `dispatch at ${sizes.at(-1)} ≤ 2x at ${sizes[0]} (${dispatchRatio.toFixed(2)}x)`,
    dispatchRatio <= 2,
  ]);
  checks.push([
    `RSS per queued job ≤ 4 KB, settled (${big.rss_bytes_per_job} B; right after the burst ${big.rss_bytes_per_job_at_once} B)`,
    big.rss_bytes_per_job <= 4096,
  ]);
  // Runs written before the steady windows were three carry neither of these.
  const windows = big.idle_cpu_window_min_ms_per_s === undefined
    ? ""
    : `, windows ${big.idle_cpu_window_min_ms_per_s}–${big.idle_cpu_window_max_ms_per_s}`;
  const alone = r.idle_without_proxy_ms_per_s === undefined
    ? ""
    : `; this process without the proxy ${r.idle_without_proxy_ms_per_s} ms/s`;
  checks.push([
    `idle CPU with ${
      sizes.at(-1)
    } waiting ≤ 2 ms/s, steady (${big.idle_cpu_ms_per_s} ms/s${windows}; ` +
    `first 3 s ${big.idle_cpu_first_ms_per_s} ms/s${alone})`,
    big.idle_cpu_ms_per_s <= 2,
  ]);
  lines.push("");
  lines.push(
    `proxy RSS: ${m.start_rss_mb} MB after start, ${m.after_load_rss_mb} MB idle after the load ` +
      `tests, ${m.busy_rss_mb} MB with 2 streams + ${SETTINGS.queued} queued` +
      // Runs written before this was measured carry no such field.
      (m.busy_idle_cpu_ms_per_s === undefined
        ? ""
        : `; its process's CPU meanwhile, nothing moving, steady: ${m.busy_idle_cpu_ms_per_s} ms/s`),
  );
  const h = r.hostile as Row;
  lines.push("");
  lines.push(
    `hostile: ${SETTINGS.hostile.stalledBig} stalled 60 MB-declared bodies +${h.stalled_60mb_rss_delta_mb} MB RSS; ` +
      `${SETTINGS.hostile.stalledMany} stalled connections +${h.stalled_many_rss_delta_mb} MB, /health p50/p99 ` +
      `${h.health_p50_ms_under_stall}/${h.health_p99_ms_under_stall} ms meanwhile; ${h.bodies} × ${h.body_mb} MB ` +
      `waiting bodies (${h.payload_mb} MB): ${h.before_burst_rss_mb} → peak ${h.peak_rss_mb} MB ` +
      `(${h.peak_over_payload}x payload), ${h.rss_5s_after_mb} MB 5 s after the last answer ` +
      `(RSS at the start of this part: ${h.baseline_rss_mb} MB)`,
  );
  checks.push([
    `stalled 60 MB-declared bodies: RSS within 50 MB of baseline (+${h.stalled_60mb_rss_delta_mb} MB)`,
    h.stalled_60mb_rss_delta_mb <= 50,
  ]);
  checks.push([
    `/health p99 ≤ 50 ms under stalled connections (${h.health_p99_ms_under_stall} ms)`,
    h.health_p99_ms_under_stall <= 50,
  ]);
  checks.push([
    `big waiting bodies peak ≤ 1.3x payload over baseline (${h.peak_over_payload}x)`,
    h.peak_over_payload <= 1.3,
  ]);
  checks.push([
    `RSS within 10% of baseline 5 s after the burst (${h.rss_5s_after_mb} vs ${h.before_burst_rss_mb} MB)`,
    h.rss_5s_after_mb <= h.before_burst_rss_mb * 1.1,
  ]);
  const st = r.store as Record<string, Row>;
  const b = r.batch as Row;
  lines.push("");
  lines.push("| store | enqueue→take→ack one by one, jobs/s | in bulk, jobs/s | vs in-memory KV |");
  lines.push("| --- | --- | --- | --- |");
  for (const name of ["memory_kv", "kv_file", "redis_rest"]) {
    const x = st[name];
    const ratio = x.one_by_one_jobs_per_s / st.memory_kv.one_by_one_jobs_per_s;
    lines.push(
      `| ${name} | ${x.one_by_one_jobs_per_s} | ${x.bulk_jobs_per_s} | ${ratio.toFixed(2)}x |`,
    );
  }
  // A store round trip must stay far below a model request (tens of ms at the very least).
  checks.push([
    `KV store ≥ 500 jobs/s one by one (${st.kv_file.one_by_one_jobs_per_s})`,
    st.kv_file.one_by_one_jobs_per_s >= 500,
  ]);
  checks.push([
    `Redis via REST ≥ 200 jobs/s one by one (${st.redis_rest.one_by_one_jobs_per_s})`,
    st.redis_rest.one_by_one_jobs_per_s >= 200,
  ]);
  lines.push("");
  const batchRatio = b.batch_s / b.sync_one_by_one_s;
  const concurrentRatio = b.batch_s / b.sync_concurrent_s;
  lines.push(
    `${b.requests} requests: batch ${b.batch_s} s, one by one ${b.sync_one_by_one_s} s ` +
      `(${batchRatio.toFixed(2)}x), ${NUM_WORKERS} at a time ${b.sync_concurrent_s} s ` +
      `(${concurrentRatio.toFixed(2)}x)`,
  );
  // The look-alike answers in about a millisecond, so this is the store's cost per line (claim,
  // answer written once, counts); against a real model's seconds per request it vanishes.
  const perLineMs = ((b.batch_s - b.sync_one_by_one_s) / b.requests) * 1000;
  checks.push([
    `a batch line costs ≤ 1 ms more than a request sent alone (${perLineMs.toFixed(2)} ms)`,
    perLineMs <= 1,
  ]);
  const cf = r.cluster_forwarding as Spread;
  lines.push("");
  lines.push("| cluster, model b on node 2 | p50 ms | p99 ms | answered |");
  lines.push("| --- | --- | --- | --- |");
  for (const [name, path] of [["local", "straight to node 2"], ["forwarded", "node 1 → node 2"]]) {
    lines.push(
      `| ${path} | ${cell(cf, `${name}_p50_ms`)} | ${cell(cf, `${name}_p99_ms`)} | ` +
        `${cf.min[`${name}_ok`]} / ${cf.median.requests} |`,
    );
  }
  checks.push([
    `cluster: forwarding adds ≤ 1 ms p50 over a local request (${cell(cf, "added_p50_ms")} ms)`,
    cf.median.added_p50_ms <= 1,
  ]);
  lines.push("");
  lines.push("targets:");
  for (const [text, ok] of checks) lines.push(`  ${ok ? "PASS" : "MISS"} ${text}`);
  return lines.join("\n");
}

if (import.meta.main) await main();
