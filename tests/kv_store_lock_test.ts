/**
 * A KV file serves one proxy at a time: the store holds a lock beside it for as long as it is
 * open, a second proxy on the same file stops at start saying so, and the proxy that opens a
 * file takes it over: whoever used it before is gone, so their jobs are settled at once, not
 * when their leases run out.
 */
import assert from "node:assert/strict";
import { KvJobStore } from "../lib/store/kv_store.ts";
import { lockPathOf, StoreInUseError } from "../lib/store/file_lock.ts";
import type { JobStore } from "../lib/store/contract.ts";
import { StoreStatus } from "../lib/store/status.ts";
import { StoreUpkeep } from "../lib/store/upkeep.ts";
import { systemClock } from "../lib/clock.ts";
import { silentLogger } from "../lib/log.ts";
import { parseConfig } from "../lib/config.ts";
import { startProxy } from "../main.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { CapturedLog } from "./support/log_capture.ts";
import { asyncJobs, syncJob } from "./support/store_records.ts";
import { withTempDir } from "./support/temp_dir.ts";
import { runProxyProcess, startProxyProcess } from "./support/proxy_process.ts";
import { waitFor, within } from "./support/wait_for.ts";
import { freePort } from "../demo/free_port.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const HOUR = 3600_000;

Deno.test("KV store: a file another open store holds is refused, naming the file; closed, it opens again", async () => {
  await withTempDir("lqp-kv-lock-", async (dir) => {
    const path = `${dir}/jobs.sqlite`;
    const first = await KvJobStore.open(path);
    let firstOpen = true;
    try {
      await assert.rejects(
        () => KvJobStore.open(path),
        (err: Error) => err instanceof StoreInUseError && err.message.includes(path),
      );
      await first.close();
      firstOpen = false;
      const second = await KvJobStore.open(path);
      await second.close();
    } finally {
      if (firstOpen) await first.close();
    }
  });
});

Deno.test("KV store: another process's hold ends with it, even killed with -9", async () => {
  await withTempDir("lqp-kv-lock-", async (dir) => {
    const path = `${dir}/jobs.sqlite`;
    const holder = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `const { KvJobStore } = await import(${JSON.stringify(`${ROOT}lib/store/kv_store.ts`)});` +
        `await KvJobStore.open(${JSON.stringify(path)}); console.log("open");` +
        "await new Promise(() => setInterval(() => {}, 60_000));",
      ],
      // deno.json there turns Deno KV on.
      cwd: ROOT,
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      assert.equal((await reader.read()).value?.trim(), "open");
      await assert.rejects(() => KvJobStore.open(path), StoreInUseError);
    } finally {
      holder.kill("SIGKILL");
      await holder.status;
      await reader.cancel();
    }
    const store = await KvJobStore.open(path);
    await store.close();
  });
});

Deno.test("KV store: a take-over ends every other node's lease at once and keeps its own for good", async () => {
  await withTempDir("lqp-kv-lock-", async (dir) => {
    const store = await KvJobStore.open(`${dir}/jobs.sqlite`);
    try {
      // The node before, killed with an hour of lease left: a waiting request and a batch line.
      await store.heartbeat("before", HOUR, 0);
      await store.record([{ job: syncJob("s-before", "before", "queued", 1), from: null }]);
      await store.enqueue(asyncJobs("line", 1), 0);
      assert.equal((await store.claim("a", "before", 1, 10)).length, 1);

      await store.takeOver("now");
      await store.record([{ job: syncJob("s-now", "now", "queued", 1), from: null }]);
      assert.deepEqual(await store.recover(20, 3), { abandoned: 1, requeued: 1, dead: 0 });
      assert.equal((await store.get("s-before"))?.state, "abandoned");
      assert.equal((await store.get("line-0"))?.state, "queued");
      // Ten years on, without a single heartbeat, the node that took over is still alive.
      assert.deepEqual(await store.recover(10 * 365 * 24 * HOUR, 3), {
        abandoned: 0,
        requeued: 0,
        dead: 0,
      });
      assert.equal((await store.get("s-now"))?.state, "queued");
    } finally {
      await store.close();
    }
  });
});

Deno.test("a second proxy on the same KV file stops at start (exit 2) saying which file; the first keeps serving", async () => {
  const api = await requireDocker();
  const name = `kv-lock-${crypto.randomUUID().slice(0, 8)}`;
  // Under ./data: the only place `deno task start` may write.
  const kvPath = `data/${name}.sqlite`;
  try {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    const config = lab.configYaml(`store:\n  path: ${kvPath}`);
    await using first = await runProxyProcess(config);
    const configPath = `${ROOT}data/${name}.yml`;
    await Deno.writeTextFile(configPath, config);
    const child = await startProxyProcess(configPath, freePort(), { output: "piped" });
    // A lock that failed would leave it serving instead of stopping: not for ever.
    const second = await within("the second proxy to stop", child.output()).catch((err) => {
      child.kill("SIGKILL");
      throw err;
    });
    const printed = new TextDecoder().decode(second.stderr);
    assert.equal(second.code, 2, `exit ${second.code}; it printed:\n${printed}`);
    const lock = lockPathOf(await Deno.realPath(`${ROOT}${kvPath}`));
    assert(
      printed.includes(`store.path ${kvPath} is in use by another proxy (it holds ${lock})`),
      printed,
    );
    const res = await fetch(`${first.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "a", messages: [{ role: "user", content: "hi" }] }),
    });
    await res.body?.cancel();
    assert.equal(res.status, 200);
  } finally {
    api.close();
    for (const suffix of ["", "-shm", "-wal", ".lock"]) {
      await Deno.remove(`${ROOT}${kvPath}${suffix}`).catch(() => {});
    }
    await Deno.remove(`${ROOT}data/${name}.yml`).catch(() => {});
  }
});

/** `store` with its calls listed by name; shared: without `takeOver`, as a Redis store is. */
function listed(store: JobStore, { shared = false, failedTakeOvers = 0 } = {}) {
  const calls: string[] = [];
  const wrapped = new Proxy(store, {
    get(target, name) {
      if (name === "takeOver" && shared) return undefined;
      const value = Reflect.get(target, name);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.push(String(name));
        if (name === "takeOver" && failedTakeOvers-- > 0) {
          return Promise.reject(new Error("disk I/O error"));
        }
        return value.apply(target, args);
      };
    },
  });
  return { store: wrapped, calls };
}

function upkeepOf(store: JobStore, log = silentLogger) {
  const status = new StoreStatus(store, log, 20);
  const upkeep = new StoreUpkeep({
    store,
    status,
    node: "n",
    clock: systemClock,
    log,
    leaseMs: 60,
    maxAttempts: 3,
    retention: { finishedMs: HOUR, deadMs: HOUR },
  });
  return {
    upkeep,
    async close() {
      await upkeep.close();
      status.close();
      await store.close();
    },
  };
}

Deno.test("store upkeep: a store taken over renews no lease and looks for dead nodes once; a shared one keeps doing both", async () => {
  const alone = listed(await KvJobStore.open(":memory:"));
  const shared = listed(await KvJobStore.open(":memory:"), { shared: true });
  const upkeeps = [upkeepOf(alone.store), upkeepOf(shared.store)];
  try {
    for (const { upkeep } of upkeeps) await upkeep.start();
    const count = (calls: string[], name: string) => calls.filter((c) => c === name).length;
    // Heartbeats every 20 ms, recovery every 30 ms on the shared one: time enough passed.
    await waitFor(
      "the shared store's heartbeats and recoveries, and the other's first round",
      () =>
        count(shared.calls, "heartbeat") >= 4 && count(shared.calls, "recover") >= 3 &&
        alone.calls.includes("purge"),
    );
    assert.deepEqual(alone.calls, ["takeOver", "recover", "purge"]);
  } finally {
    for (const { close } of upkeeps) await close();
  }
});

Deno.test("store upkeep: a store down at start is taken over once it is back, before it looks for dead nodes", async () => {
  const log = new CapturedLog();
  const alone = listed(await KvJobStore.open(":memory:"), { failedTakeOvers: 1 });
  const { upkeep, close } = upkeepOf(alone.store, log);
  try {
    await upkeep.start();
    assert.deepEqual(alone.calls, ["takeOver"]);
    assert.equal(log.of("store_take_over_failed").length, 1);
    await waitFor(
      "the take-over once the store is back, then the first round",
      () => alone.calls.includes("purge"),
    );
    assert.deepEqual(alone.calls, ["takeOver", "ping", "takeOver", "recover", "purge"]);
  } finally {
    await close();
  }
});

Deno.test("a proxy that could not listen (its port taken) leaves its KV file to the next start in this process", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    await withTempDir("lqp-kv-lock-", async (dir) => {
      using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const yaml = lab.configYaml(`store:\n  path: ${dir}/jobs.sqlite`);
      const onTaken = parseConfig(yaml.replace("port: 0", `port: ${taken.addr.port}`), "test");
      await assert.rejects(
        () => startProxy(onTaken, { log: silentLogger }),
        Deno.errors.AddrInUse,
      );
      const proxy = await startProxy(parseConfig(yaml, "test"), { log: silentLogger });
      await proxy.close();
    });
  } finally {
    api.close();
  }
});
