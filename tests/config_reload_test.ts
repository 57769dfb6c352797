/**
 * Config reload without a restart: on a file change, SIGHUP or POST /admin/reload. Models are
 * added, changed and removed; a request in flight on a removed model still finishes; a bad
 * file is rejected with the same problems a start prints, and the old config stays. Reloaded
 * scheduler settings change the next scheduling decision.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config.ts";
import type { DockerApi } from "../lib/docker.ts";
import { planReload } from "../lib/live_config.ts";
import { chatBody, getJson, post, queuedModels, SseReader } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { freePort } from "../demo/free_port.ts";
import { CapturedLog } from "./support/log_capture.ts";
import {
  type HomelabContext,
  startTestProxy,
  testConfigText,
  withHomelabProxy,
} from "./support/proxy.ts";
import { startProxyProcess } from "./support/proxy_process.ts";
import { watchOutput } from "./support/process_output.ts";
import { waitFor } from "./support/wait_for.ts";
import { batchFile, fileLines, getBatch, submitBatch } from "./support/batches.ts";
import { withTempDir } from "./support/temp_dir.ts";

const ADMIN_KEY = "reload-admin-key-0123456789";

/** Docker and a temp dir for config.yml, both let go of after `fn`. */
async function withConfigDir(
  prefix: string,
  fn: (api: DockerApi, dir: string) => Promise<void>,
): Promise<void> {
  const api = await requireDocker();
  try {
    await withTempDir(prefix, (dir) => fn(api, dir));
  } finally {
    api.close();
  }
}

function model(id: string, extra = "") {
  return `  ${id}:\n    container_name: c-${id}\n    backend_url: http://127.0.0.1:8080/v1\n${extra}`;
}

/** `configYaml` (a homelab's) with only the model blocks of `ids`, after `extra`. */
function keepModels(configYaml: string, ids: string[], extra = ""): string {
  const blocks = configYaml.split(/\n(?= {2}\w+:\n)/);
  const kept = blocks.filter((b, i) => i === 0 || ids.some((id) => b.startsWith(`  ${id}:`)));
  return extra + kept.join("\n") + "\n";
}

/** POST /admin/reload with the admin key. */
function askReload(proxyUrl: string): Promise<Response> {
  return fetch(`${proxyUrl}/admin/reload`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
  });
}

Deno.test("planReload(): models added, removed, changed; restart-only settings keep their old value", () => {
  const prev = parseConfig(`port: 8888\nqueue_size: 5\nmodels:\n${model("a")}${model("b")}`, "old");
  const next = parseConfig(
    `port: 9999\nqueue_size: 9\nstore:\n  type: memory\nmodels:\n${model("b", "    ttl: 60\n")}${
      model("c")
    }`,
    "new",
  );
  const { config, changes } = planReload(prev, next);
  assert.deepEqual(changes.added, ["c"]);
  assert.deepEqual(changes.removed, ["a"]);
  assert.deepEqual(changes.changed, ["b"]);
  assert.deepEqual(changes.settings, ["queue_size"]);
  assert.deepEqual(changes.restartNeeded, ["port", "store"]);
  assert.equal(config.port, 8888, "the port stays until a restart");
  assert.equal(config.store.type, "kv");
  assert.equal(config.queueSize, 9);
  assert.deepEqual(config.models.map((m) => m.id), ["b", "c"]);
  assert.equal(planReload(prev, prev).changes.changed.length, 0);
});

Deno.test("config reload: a bad file is rejected and the old config stays; a good one adds, changes and removes models while a stream on the removed one finishes", async () => {
  await withConfigDir("lqp-reload-", async (api, dir) => {
    await using lab = await createHomelab(api, [{ id: "a" }, { id: "b" }, { id: "c" }]);
    const path = `${dir}/config.yml`;
    const all = lab.configYaml(`num_workers: 1\nadmin_key: ${ADMIN_KEY}`);
    // Models a and b at first; c and an alias for b come later.
    const withModels = (ids: string[], alias = "") =>
      keepModels(all, ids).replace(/( {2}b:\n)/, `$1${alias}`);
    const log = new CapturedLog();
    await using proxy = await startTestProxy(withModels(["a", "b"]), { configFile: path, log });
    await proxy.reconciled;
    const ids = async () =>
      ((await getJson(`${proxy.url}/v1/models`)).body.data as { id: string }[]).map((m) => m.id);
    assert.deepEqual(await ids(), ["a", "b"]);

    // A stream on a, in flight, and a request for a waiting behind it (num_workers 1).
    const stream = new SseReader(
      await post(proxy.url, chatBody("a", { stream: true, fake_hold: true })),
    );
    // Past the loading notes: the backend is generating.
    while ((await stream.next())?.data === undefined) {
      // comment lines while a loads
    }
    const waiting = post(proxy.url, chatBody("a"));
    await waitFor(
      "a request waiting",
      async () => ((await getJson(`${proxy.url}/queue`)).body.jobs as unknown[]).length === 1,
    );

    // A bad file: rejected (the watch saw it), same problems as at start, old config in force.
    await Deno.writeTextFile(path, testConfigText("queue_size: -1\nmodelz: {}\n"));
    const rejected = await waitFor("the watch to reject it", () => log.of("config_rejected")[0]);
    assert.equal(rejected.fields.trigger, "file");
    assert.match(String(rejected.fields.problems), /queue_size \(line 4\)/);
    assert.match(String(rejected.fields.problems), /modelz \(line 5\): unknown key/);
    const asked = await askReload(proxy.url);
    assert.equal(asked.status, 400);
    const error = (await asked.json()).error;
    assert.equal(error.code, "invalid_config");
    assert.match(error.message, /config in force stays[\s\S]*queue_size \(line 4\)/);
    assert.deepEqual(await ids(), ["a", "b"]);

    // A good file: a removed, b gets an alias, c added.
    await Deno.writeTextFile(
      path,
      testConfigText(withModels(["b", "c"], "    aliases: [bee]\n")),
    );
    const reloaded = await waitFor("the watch to reload", () => log.of("config_reloaded")[0]);
    assert.equal(reloaded.fields.added, "c");
    assert.equal(reloaded.fields.removed, "a");
    assert.equal(reloaded.fields.changed, "b");
    assert.deepEqual(await ids(), ["b", "c"]);

    // The waiting request for a is answered 404; new ones too; the alias works.
    const gone = await waiting;
    assert.equal(gone.status, 404);
    assert.match((await gone.json()).error.message, /'a' was removed from the config/);
    assert.equal((await post(proxy.url, chatBody("a"))).status, 404);
    const viaAlias = post(proxy.url, chatBody("bee"));

    // The stream on a was untouched: it finishes whole once released.
    assert.equal(await lab.release(), 1);
    const rest = await stream.rest();
    assert.equal(rest.at(-1)?.data, "[DONE]");
    assert.ok(!rest.some((e) => e.data?.includes('"error"')));

    const answered = await viaAlias;
    assert.equal(answered.status, 200);
    assert.equal((await answered.json()).model, "b");
    assert.deepEqual(await lab.running(), [lab.containerOf("b")], "a's container was stopped");
    const unload = log.of("unload").find((e) => e.fields.model === "a");
    assert.equal(unload?.fields.cause, "config");
    assert.equal((await post(proxy.url, chatBody("c"))).status, 200);
  });
});

Deno.test("config reload: two reloads while a removed model's stream still runs: its container is stopped once the stream ends, and only the next model runs", async () => {
  await withConfigDir("lqp-reload2-", async (api, dir) => {
    // b on a port of its own: left running, it would serve beside a, not block it.
    await using lab = await createHomelab(api, [{ id: "a" }, { id: "b", ownPort: true }]);
    const path = `${dir}/config.yml`;
    const all = lab.configYaml(`num_workers: 1\nadmin_key: ${ADMIN_KEY}`);
    const withModels = (ids: string[], extra = "") => keepModels(all, ids, extra);
    const log = new CapturedLog();
    await using proxy = await startTestProxy(withModels(["a", "b"]), { configFile: path, log });
    await proxy.reconciled;
    const reload = async (text: string) => {
      await Deno.writeTextFile(path, testConfigText(text));
      const res = await askReload(proxy.url);
      assert.equal(res.status, 200, await res.text());
    };
    const stream = new SseReader(
      await post(proxy.url, chatBody("b", { stream: true, fake_hold: true })),
    );
    while ((await stream.next())?.data === undefined) {
      // comment lines while b loads
    }
    // The first reload removes b (its unload waits for the stream); the second changes
    // something else before that unload ran.
    await reload(withModels(["a"]));
    await reload(withModels(["a"], "queue_size: 77\n"));
    assert.equal(await lab.release("b"), 1);
    assert.equal((await stream.rest()).at(-1)?.data, "[DONE]");
    await waitFor("b's container to be stopped", async () => (await lab.running()).length === 0);
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
    assert.deepEqual(log.of("config_apply_failed"), []);
  });
});

Deno.test("config reload: a batch's lines still waiting for a removed model fail with model_not_found, and the batch completes", async () => {
  await withConfigDir("lqp-reload-batch-", async (api, dir) => {
    await using lab = await createHomelab(api, [{ id: "a" }, { id: "b" }]);
    const path = `${dir}/config.yml`;
    const all = lab.configYaml(`num_workers: 1\nadmin_key: ${ADMIN_KEY}`);

    await using proxy = await startTestProxy(all, { configFile: path });
    await proxy.reconciled;
    // Eight held lines for a fill the runner's window (num_workers 1: 8 lines in memory); b's
    // two lines wait in b's lane.
    const batch = await submitBatch(
      proxy.url,
      batchFile([...Array(8).fill("a"), "b", "b"], { fake_hold: true }),
    );
    await waitFor("a's first line at the backend", async () => {
      try {
        return (await lab.state()).inflight === 1;
      } catch {
        return false; // a still loading: the look-alike does not answer yet
      }
    });
    // The runner holds a's eight lines (the dispatcher's queue); b's are still in their lane.
    assert.ok(!(await queuedModels(proxy.url)).includes("b"), "b's lines were claimed already");
    await Deno.writeTextFile(path, testConfigText(keepModels(all, ["a"])));
    const reloaded = await askReload(proxy.url);
    assert.equal(reloaded.status, 200, await reloaded.text());
    // a's lines go on one at a time as each is let go.
    const done = await waitFor("the batch to finish", async () => {
      await lab.release();
      const now = await getBatch(proxy.url, batch.id);
      return now.status !== "in_progress" && now;
    });
    assert.equal(done.status, "completed");
    assert.deepEqual(done.request_counts, { total: 10, completed: 8, failed: 2 });
    const errors = await fileLines(proxy.url, done.error_file_id);
    assert.deepEqual(errors.map((line) => line.custom_id).sort(), ["line-8", "line-9"]);
    for (const line of errors) assert.equal(line.error?.code, "model_not_found");
  });
});

Deno.test("config reload: an editor that saves by replacing the file is seen at each save, and a write beside the file reloads nothing", async () => {
  await withConfigDir("lqp-replace-", async (api, dir) => {
    await using lab = await createHomelab(api, [{ id: "a" }, { id: "b" }]);
    const path = `${dir}/config.yml`;
    const [onlyA] = lab.configYaml().split(/\n(?= {2}b:\n)/);
    const log = new CapturedLog();
    await using proxy = await startTestProxy(`${onlyA}\n`, { configFile: path, log });
    await proxy.reconciled;
    // As vim or VS Code save: the new text to a file beside, renamed over config.yml. The old
    // file, and whatever watched it, is gone.
    const save = async (text: string) => {
      await Deno.writeTextFile(`${dir}/.config.yml.swp`, testConfigText(text));
      await Deno.rename(`${dir}/.config.yml.swp`, path);
    };
    const reloads = () => log.of("config_reloaded");

    await save(lab.configYaml());
    const first = await waitFor("the first save's reload", () => reloads()[0]);
    assert.equal(first.fields.added, "b");
    assert.equal((await post(proxy.url, chatBody("b"))).status, 200);

    // A log written next to the config, as `> proxy.log` does: no reload of its own.
    for (let i = 0; i < 20; i++) {
      await Deno.writeTextFile(`${dir}/proxy.log`, `line ${i}\n`, { append: true });
    }
    // The second save replaces the file the first one put there: seen as well.
    await save(lab.configYaml().replace(/\n {2}a:\n[\s\S]*?(?=\n {2}b:\n)/, ""));
    const second = await waitFor("the second save's reload", () => reloads()[1]);
    assert.equal(second.fields.removed, "a");
    assert.equal((await post(proxy.url, chatBody("a"))).status, 404);
    assert.equal(reloads().length, 2, "one reload per save, none for the log");
  });
});

Deno.test("SIGHUP reloads a running proxy process; a restart-only change is named in the log", async () => {
  await withConfigDir("lqp-sighup-", async (api, dir) => {
    await using lab = await createHomelab(api, [{ id: "a" }, { id: "b" }]);
    const path = `${dir}/config.yml`;
    const [first] = lab.configYaml().split(/\n(?= {2}b:\n)/);
    await Deno.writeTextFile(path, testConfigText(`${first}\n`));
    const port = freePort();
    const url = `http://127.0.0.1:${port}`;
    await using proxy = watchOutput(await startProxyProcess(path, port, { output: "piped" }));
    const { child } = proxy;
    await waitFor("the proxy to listen", async () => (await fetch(`${url}/health`)).ok);
    assert.equal((await post(url, chatBody("b"))).status, 404);

    await Deno.writeTextFile(
      path,
      testConfigText(lab.configYaml().replace("stop_timeout: 5", "stop_timeout: 6")),
    );
    child.kill("SIGHUP");
    // SIGHUP always reloads (and logs it); the file watch may have applied the change a
    // moment earlier on a slow machine, so the change itself may sit on either line.
    await waitFor(
      "the SIGHUP reload",
      () => /config_reloaded trigger=SIGHUP/.test(proxy.output),
    );
    assert.match(proxy.output, /config_reloaded trigger=\w+ added=b/);
    assert.match(proxy.output, /config_restart_needed keys=stop_timeout/);
    assert.equal((await post(url, chatBody("b"))).status, 200);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  });
});

Deno.test("config reload: a revoked API key stops working at once, a new one works, no restart", async () => {
  await withConfigDir("lqp-keys-", async (api, dir) => {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    const path = `${dir}/config.yml`;
    const keys = (...list: string[]) =>
      `admin_key: ${ADMIN_KEY}\napi_keys:\n${
        list.map((k, i) => `  - name: user${i}\n    key: ${k}\n`).join("")
      }`;
    const OLD = "old-key-0123456789abcdef";
    const NEW = "new-key-0123456789abcdef";
    await using proxy = await startTestProxy(lab.configYaml(keys(OLD)), { configFile: path });
    await proxy.reconciled;
    const ask = (key: string) =>
      fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(chatBody("a")),
      }).then(async (res) => (await res.body?.cancel(), res.status));
    assert.equal(await ask(OLD), 200);
    assert.equal(await ask(NEW), 401);

    await Deno.writeTextFile(path, testConfigText(lab.configYaml(keys(NEW))));
    const res = await askReload(proxy.url);
    assert.equal(res.status, 200);
    // The file watch may have applied it a moment earlier; either way it is in force now.
    assert.equal((await res.json()).reloaded, true);
    assert.equal(await ask(OLD), 401);
    assert.equal(await ask(NEW), 200);
  });
});

interface SchedulerLab extends HomelabContext {
  log: CapturedLog;
  /** Rewrites the config file with `scheduler` as its scheduler block and POSTs /admin/reload. */
  reload(scheduler: string): Promise<void>;
  /** The models of the request lines logged so far, in the order they finished. */
  served(): unknown[];
  queueView(): Promise<
    { switching_to: string | null; jobs: { waited_s: number; priority: string }[] }
  >;
}

/**
 * Models a and b (one worker each) and a proxy started from a config file whose scheduler
 * block is `scheduler`; a is loaded and one held request runs on it.
 */
async function withSchedulerLab(
  scheduler: string,
  fn: (ctx: SchedulerLab, held: Promise<Response>) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lqp-scheduler-" });
  const path = `${dir}/config.yml`;
  const extra = (block: string) => `num_workers: 1\nadmin_key: ${ADMIN_KEY}\nscheduler:\n${block}`;
  const log = new CapturedLog();
  try {
    await withHomelabProxy([{ id: "a" }, { id: "b" }], extra(scheduler), async (ctx) => {
      const { lab, proxy } = ctx;
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
      const held = post(proxy.url, chatBody("a", { fake_hold: true }));
      await waitFor("a's worker busy", async () => (await lab.state()).inflight === 1);
      await fn({
        ...ctx,
        log,
        async reload(block) {
          await Deno.writeTextFile(path, testConfigText(lab.configYaml(extra(block))));
          const res = await askReload(proxy.url);
          assert.equal(res.status, 200);
          // The file watch may have applied it a moment earlier; either way it is in force now.
          assert.equal((await res.json()).reloaded, true);
        },
        served: () => log.of("request").map((e) => e.fields.model),
        queueView: async () =>
          (await getJson(`${proxy.url}/queue`)).body as Awaited<
            ReturnType<SchedulerLab["queueView"]>
          >,
      }, held);
    }, { configFile: path, log });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a reloaded scheduler.max_wait applies to the next decision: a request for another model that waited past the new bound pulls the swap ahead of the loaded model's queue", async () => {
  await withSchedulerLab(
    "  max_wait: 600",
    async ({ lab, proxy, reload, served, queueView }, held) => {
      // a has work waiting before b's request arrives, so only max_wait can make b's due.
      const forA = post(proxy.url, chatBody("a"));
      await waitFor("a's request queued", async () => (await queueView()).jobs.length === 1);
      const forB = post(proxy.url, chatBody("b"));
      await waitFor(
        "b's request to wait 2.7 s (past max_wait 1 and its backlog allowance, at most 1.5 s)",
        async () => {
          const view = await queueView();
          return view.jobs.length === 2 && view.jobs[1].waited_s >= 2.7;
        },
        { intervalMs: 100 },
      );
      // Under max_wait 600 it is not due: the loaded model's queue goes first.
      assert.equal((await queueView()).switching_to, null);

      await reload("  max_wait: 1");
      await waitFor(
        "the swap to b to be decided",
        async () => (await queueView()).switching_to === "b",
      );
      await lab.release();
      for (const res of [await held, await forA, await forB]) {
        assert.equal(res.status, 200);
      }
      assert.deepEqual(served(), ["a", "a", "b", "a"]);
    },
  );
});

Deno.test("a reloaded scheduler.min_residency applies to the next decision: an interactive request pulls the swap past the loaded model's batch work", async () => {
  await withSchedulerLab(
    "  min_residency: 600",
    async ({ lab, proxy, reload, served, queueView }, held) => {
      const batch = fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-priority": "batch" },
        body: JSON.stringify(chatBody("a")),
      });
      await waitFor("a's batch request queued as batch", async () => {
        const jobs = (await queueView()).jobs;
        return jobs.length === 1 && jobs[0].priority === "batch";
      });
      const forB = post(proxy.url, chatBody("b"));
      await waitFor("b's request queued", async () => (await queueView()).jobs.length === 2);
      // Under min_residency 600 (capped by max_wait, 60) a keeps its batch work for now.
      assert.equal((await queueView()).switching_to, null);

      await reload("  min_residency: 0.5");
      await waitFor(
        "the swap to b to be decided",
        async () => (await queueView()).switching_to === "b",
      );
      await lab.release();
      for (const res of [await held, await batch, await forB]) {
        assert.equal(res.status, 200);
      }
      assert.deepEqual(served(), ["a", "a", "b", "a"]);
    },
  );
});

Deno.test("a reloaded scheduler.batch_aging applies to the next decision: a batch request that waited past it goes before a newer interactive one", async () => {
  await withSchedulerLab("  batch_aging: 600", async ({ lab, proxy, reload, queueView }, held) => {
    const batch = fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-priority": "batch" },
      body: JSON.stringify(chatBody("a", { marker: "batch" })),
    });
    await waitFor("the batch request queued", async () => (await queueView()).jobs.length === 1);
    const interactive = post(proxy.url, chatBody("a", { marker: "interactive" }));
    await waitFor("the batch request to wait 1 s, the interactive one queued", async () => {
      const view = await queueView();
      return view.jobs.length === 2 && view.jobs[0].waited_s >= 1 &&
        view.jobs.map((j) => j.priority).join() === "batch,interactive";
    }, { intervalMs: 100 });

    await reload("  batch_aging: 0.5");
    await lab.release();
    for (const res of [await held, await batch, await interactive]) assert.equal(res.status, 200);
    const markers = (await lab.state()).received.map((r) => /"marker":"(\w+)"/.exec(r.body)?.[1])
      .filter((m) => m !== undefined);
    assert.deepEqual(markers, ["batch", "interactive"]);
  });
});
