/**
 * The proxy as users run it: `deno task start` as a separate process, with the narrow
 * permissions of the task, a config file and environment overrides.
 */
import assert from "node:assert/strict";
import { chatBody, post, queuedModels, SseReader } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { freePort } from "../demo/free_port.ts";
import { testConfigText } from "./support/proxy.ts";
import { runProxyProcess } from "./support/proxy_process.ts";
import { waitFor, within } from "./support/wait_for.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function startTask(args: string[], env: Record<string, string>) {
  return new Deno.Command("deno", {
    args: ["task", "--quiet", "start", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

Deno.test("deno task start: a bad config stops start-up with one line per problem", async () => {
  const child = startTask(["--config", "tests/fixtures/bad.yml"], {});
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 2);
  assert.match(stderr, /Invalid config tests\/fixtures\/bad\.yml:/);
  assert.match(stderr, /queue_size \(line 1\): Invalid input: expected number/);
  assert.match(
    stderr,
    /models\.broken\.container_name \(line 5\): expected a Docker container name/,
  );
  assert.match(stderr, /models\.broken\.backend_url \(line 6\): expected an http/);
  assert.match(stderr, /models\.broken\.startup_timout \(line 7\): unknown key/);
  assert.doesNotMatch(stderr, /\n\s+at /); // no stack trace
});

Deno.test("deno task start with a config outside the checkout: answers /health and /v1/models when no container exists, and says so", async () => {
  const port = freePort();
  // Where operators keep it (/etc/lqp/config.yml): the task's permissions must let it be read.
  const dir = await Deno.makeTempDir({ prefix: "lqp-etc-" });
  const config = `${dir}/config.yml`;
  await Deno.copyFile(`${ROOT}tests/fixtures/no_containers.yml`, config);
  const child = startTask(["--config", config], {
    LQP_PORT: String(port),
    NUM_WORKERS: "3",
    LQP_STORE: "memory", // nothing written into the checkout's data/
  });
  try {
    const health = await waitFor("the proxy to listen", async () => {
      const res = await fetch(`http://127.0.0.1:${port}/health`);
      return { status: res.status, body: await res.json() };
    });
    assert.equal(health.status, 200);
    assert.equal(health.body.status, "healthy");
    assert.match(health.body.message, /missing containers: lqp-fixture-does-not-exist/);
    const models = await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json();
    assert.deepEqual(models.data.map((m: { id: string }) => m.id), ["missing-model"]);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).json();
    assert.equal(metrics.num_workers, 3);
  } finally {
    child.kill("SIGTERM");
    const out = await child.output();
    assert.equal(out.code, 0, "SIGTERM should end the proxy cleanly");
    const stdout = new TextDecoder().decode(out.stdout);
    assert.match(stdout, /INFO listening url=http:\/\/127\.0\.0\.1:\d+\/v1/);
    assert.match(new TextDecoder().decode(out.stderr), /no API keys are configured/);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGTERM: queued requests get 503, the one in flight finishes, exit 0", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    const port = freePort();
    const path = await Deno.makeTempFile({ suffix: ".yml" });
    await Deno.writeTextFile(
      path,
      lab.configYaml("num_workers: 1\nshutdown_grace: 30\nstore:\n  type: memory")
        .replace("port: 0", `port: ${port}`),
    );
    const child = new Deno.Command("deno", {
      args: ["run", "-A", "main.ts", "--config", path],
      cwd: ROOT,
      stdout: "null",
      stderr: "null",
    }).spawn();
    const url = `http://127.0.0.1:${port}`;
    await waitFor("the proxy to listen", async () => (await fetch(`${url}/health`)).ok);
    const inFlight = post(url, chatBody("a", { fake_hold: true }));
    await waitFor("a request in flight", async () => (await lab.state()).inflight === 1);
    const queued = post(url, chatBody("a"));
    await waitFor("a request queued", async () => (await queuedModels(url)).length === 1);

    child.kill("SIGTERM");
    const refused = await queued;
    assert.equal(refused.status, 503);
    assert.equal((await refused.json()).error.code, "shutting_down");
    await lab.release();
    const finished = await inFlight;
    assert.equal(finished.status, 200);
    assert.equal((await finished.json()).object, "chat.completion");
    assert.equal((await child.status).code, 0);
    await Deno.remove(path);
  } finally {
    api.close();
  }
});

Deno.test("SIGTERM with requests running past shutdown_grace: they are cut with 503 shutting_down (a final SSE event for a stream) and logged so, the backend hears it, exit 0, the model's container is left running", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    await using proxy = await runProxyProcess(testConfigText(lab.configYaml("shutdown_grace: 1")));
    const stream = new SseReader(
      await post(proxy.url, chatBody("a", { stream: true, fake_hold: true })),
    );
    // Past the loading notes: the backend is generating, and holds.
    for (let event = await stream.next(); event?.data === undefined; event = await stream.next()) {
      assert.ok(event !== null, "the stream ended before its first data event");
    }
    const plain = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("both requests at the backend", async () => (await lab.state()).inflight === 2);

    // Neither request is ever released: only the grace running out can end them.
    proxy.child.kill("SIGTERM");
    const events = await within("the stream to be cut", stream.rest());
    assert.equal(JSON.parse(events.at(-1)!.data!).error.code, "shutting_down");
    assert.ok(!events.some((e) => e.data === "[DONE]"), "the answer was cut, not finished");
    const refused = await within("the plain request's answer", plain);
    assert.equal(refused.status, 503);
    assert.equal((await refused.json()).error.code, "shutting_down");
    const { code } = await within("the proxy to exit", proxy.child.status);
    assert.equal(code, 0);
    assert.match(proxy.output, /WARN shutdown_grace_expired grace_ms=1000/);
    // Logged as what the client got, not as a client that left.
    assert.match(proxy.output, /INFO request .*stream=false .*status=503/);

    await waitFor("the backend to see both generations aborted", async () => {
      const backend = await lab.state();
      return backend.disconnects === 2 && backend.inflight === 0;
    });
    // The proxy stops no model on its way out; the next start adopts it.
    assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
  } finally {
    api.close();
  }
});
