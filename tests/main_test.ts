/**
 * The proxy as users run it: `deno task start` as a separate process, with the narrow
 * permissions of the task, a config file and environment overrides.
 */
import assert from "node:assert/strict";
import { freePort } from "./support/free_port.ts";
import { waitFor } from "./support/wait_for.ts";

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

Deno.test("deno task start: answers /health and /v1/models when no container exists, and says so", async () => {
  const port = freePort();
  const child = startTask(["--config", "tests/fixtures/no_containers.yml"], {
    LQP_PORT: String(port),
    NUM_WORKERS: "3",
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
  }
});
