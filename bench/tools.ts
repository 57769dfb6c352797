/**
 * @module
 * What the benchmark drives besides the proxy: nginx as the reference reverse proxy, wrk as
 * the load generator, and /proc for CPU time and memory. Installs nginx and wrk from Debian
 * when they are missing.
 */

/** A server of ours the benchmark started in its own process. */
export interface ProxyProcess {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** The `q` quantile (0–1) of `values`, nearest rank. */
export function pct(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** `x` rounded to `digits` decimals, for the report. */
export function round(x: number, digits = 3): number {
  return Math.round(x * 10 ** digits) / 10 ** digits;
}

export async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function has(cmd: string): Promise<boolean> {
  const out = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .output();
  return out.success;
}

/** apt-get installs nginx and wrk when they are not there yet. */
export async function ensureTools(): Promise<void> {
  const missing = [];
  if (!(await has("nginx")) && !(await has("/usr/sbin/nginx"))) missing.push("nginx");
  if (!(await has("wrk"))) missing.push("wrk");
  if (missing.length === 0) return;
  console.error(`bench: installing ${missing.join(" ")} with apt-get`);
  await run("apt-get", ["update", "-qq"]);
  await run("apt-get", ["install", "-y", "-qq", ...missing]);
}

/** CPU time (user + system, ms) of the given processes, from /proc/<pid>/stat. */
async function cpuMs(pids: number[]): Promise<number> {
  let ticks = 0;
  for (const pid of pids) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start at ") ".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks * 10; // CLK_TCK is 100 on Linux
}

/** What `work` returned, and the CPU time (ms) the given processes spent while it ran. */
export async function cpuOver<T>(pids: number[], work: () => Promise<T>): Promise<[T, number]> {
  const before = await cpuMs(pids);
  const result = await work();
  return [result, (await cpuMs(pids)) - before];
}

/**
 * CPU time (ms) of every thread of `pid` so far, from each one's schedstat: nanoseconds, where
 * /proc's 10 ms ticks cannot tell an idle process's few ms/s from nothing.
 */
export async function threadCpuMs(pid: number): Promise<number> {
  let ns = 0;
  for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
    // A thread that ended since the listing took its time with it.
    const text = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/schedstat`)
      .catch(() => "0");
    ns += Number(text.split(" ")[0]);
  }
  return ns / 1e6;
}

export async function rssKb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

export async function childPids(pid: number): Promise<number[]> {
  const text = await Deno.readTextFile(`/proc/${pid}/task/${pid}/children`).catch(() => "");
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

export interface Nginx {
  url: string;
  pids(): Promise<number[]>;
  stop(): Promise<void>;
}

/** nginx in front of `upstream` with keep-alive upstream connections and no buffering. */
export async function startNginx(listenPort: number, upstream: string): Promise<Nginx> {
  const dir = await Deno.makeTempDir({ prefix: "lqp-nginx-" });
  await Deno.mkdir(`${dir}/logs`);
  const conf = `worker_processes 1;
error_log ${dir}/logs/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  upstream backend { server ${upstream}; keepalive 32; }
  server {
    listen 127.0.0.1:${listenPort};
    client_max_body_size 64m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
`;
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const child = new Deno.Command("nginx", {
    args: ["-p", dir, "-c", `${dir}/nginx.conf`, "-g", "daemon off;"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const url = `http://127.0.0.1:${listenPort}`;
  for (let i = 0; i < 200; i++) {
    try {
      await (await fetch(`${url}/health`)).body?.cancel();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return {
    url,
    pids: async () => [child.pid, ...(await childPids(child.pid))],
    async stop() {
      child.kill("SIGTERM");
      await child.output();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

export interface WrkResult {
  requests: number;
  seconds: number;
  /** Of the requests as each one took, timed by the script below. */
  p50Ms: number;
  p99Ms: number;
  /** wrk's own p99, with its correction for coordinated omission (see RAW_LATENCIES). */
  p99CorrectedMs: number;
  errors: number;
}

function toMs(value: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(value.trim());
  if (!m) throw new Error(`wrk: cannot read latency '${value}'`);
  const n = Number(m[1]);
  return { us: n / 1000, ms: n, s: n * 1000, m: n * 60_000 }[m[2] as "us" | "ms" | "s" | "m"];
}

/**
 * A wrk script's part that times each request, from `request()` to `response()`, with the
 * monotonic clock (LuaJIT's ffi), and prints every time (µs) on one line at the end; `wrk()`
 * takes their percentiles with `pct`, as every other part of the bench.
 *
 * wrk's own percentiles are not those of the requests: before printing, it "corrects" its
 * histogram for coordinated omission (`stats_correct`), adding for every request that took
 * more than twice the mean interval one made-up sample per interval it waited. A 10 ms stall at
 * c=2 against an instant backend (0.35 ms apart) adds ~28 samples, so its p99 weighs each stall
 * by its length: on this machine 1.3-2.2x the p99 of the requests as this script timed them,
 * and above what any request could have taken (1.7-2x a bound read inside the proxy).
 * docs/performance.md, "The c=2 p99 was wrk's corrected histogram", has the measurements.
 *
 * A thread's `request()` and `response()` pair up only with one connection per thread, which
 * is how `wrk()` runs it.
 */
const RAW_LATENCIES = `
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } lqp_timespec;
int clock_gettime(int clock, lqp_timespec *ts);
]]
local ts = ffi.new("lqp_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
local prepared
local started = 0
latencies = {}
function init() prepared = wrk.format() end
function request()
  started = now_us()
  return prepared
end
function response()
  latencies[#latencies + 1] = now_us() - started
end
function done()
  local all = {}
  for _, thread in ipairs(threads) do
    for _, us in ipairs(thread:get("latencies")) do all[#all + 1] = string.format("%.1f", us) end
  end
  io.write("latencies_us ", table.concat(all, " "), "\\n")
end
`;

/**
 * wrk with `connections` connections posting `body` to `url` for `seconds`, one connection per
 * thread (see RAW_LATENCIES).
 */
export async function wrk(
  url: string,
  body: string,
  connections: number,
  seconds: number,
): Promise<WrkResult> {
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  await Deno.writeTextFile(
    script,
    `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\n` +
      `wrk.headers["Content-Type"] = "application/json"\n${RAW_LATENCIES}`,
  );
  try {
    const out = await run("wrk", [
      `-t${connections}`,
      `-c${connections}`,
      `-d${seconds}s`,
      "--latency",
      "-s",
      script,
      url,
    ]);
    const requests = Number(/(\d+) requests in ([\d.]+)(\w+)/.exec(out)?.[1]);
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
    const socketErrors = /Socket errors: (.*)/.exec(out)?.[1] ?? "";
    const errors = non2xx +
      [...socketErrors.matchAll(/\d+/g)].reduce((a, m) => a + Number(m[0]), 0);
    const timed = /^latencies_us ([\d. ]+)$/m.exec(out)?.[1].split(" ").map((us) =>
      Number(us) / 1000
    );
    if (timed === undefined) throw new Error(`wrk: the script printed no latencies:\n${out}`);
    return {
      requests,
      seconds,
      p50Ms: round(pct(timed, 0.5)),
      p99Ms: round(pct(timed, 0.99)),
      p99CorrectedMs: toMs(/^\s+99%\s+(\S+)/m.exec(out)![1]),
      errors,
    };
  } finally {
    await Deno.remove(script);
  }
}
