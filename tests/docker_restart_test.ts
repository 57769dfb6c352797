/**
 * The Docker daemon restarted under a running proxy (as `apt upgrade` or a crash does):
 * requests in the gap fail clearly instead of hanging, and service resumes without
 * restarting the proxy. This test really stops dockerd and starts it again (detached, as
 * `.ci/run` does); it needs root, like the rest of the suite.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post } from "./support/client.ts";
import { DOCKER_SOCKET, processAlive } from "./support/docker_env.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { DockerApi } from "../lib/docker.ts";
import { waitFor } from "./support/wait_for.ts";

async function dockerAnswers(): Promise<boolean> {
  const api = new DockerApi(DOCKER_SOCKET);
  try {
    await api.ping(AbortSignal.timeout(1000));
    return true;
  } catch {
    return false;
  } finally {
    api.close();
  }
}

async function dockerdPid(): Promise<number | null> {
  const out = await new Deno.Command("pgrep", { args: ["-x", "dockerd"], stdout: "piped" })
    .output();
  const pid = Number(new TextDecoder().decode(out.stdout).trim().split("\n")[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** Starts dockerd outside this process's tree, so it outlives the test run. */
async function startDockerd(): Promise<void> {
  await new Deno.Command("setsid", {
    args: ["sh", "-c", "dockerd >>/tmp/lqp-test-dockerd.log 2>&1 &"],
  }).output();
  await waitFor("dockerd to answer again", dockerAnswers, { timeoutMs: 60_000, intervalMs: 200 });
}

Deno.test("Docker daemon restarted: clear errors during the gap, then service resumes by itself", async () => {
  await withHomelabProxy([{ id: "a" }], "request_timeout: 30", async ({ proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const pid = await dockerdPid();
    assert.ok(pid !== null, "dockerd is not running as a process this test can restart");
    try {
      Deno.kill(pid, "SIGTERM");
      // Gone for good: a new dockerd refuses to start while the old one holds its pid file.
      await waitFor("dockerd to exit", async () => !(await processAlive(pid)), {
        timeoutMs: 60_000,
        intervalMs: 100,
      });

      const res = await post(proxy.url, chatBody("a"));
      const body = await res.json();
      assert.ok(res.status === 502 || res.status === 503, `status ${res.status}`);
      assert.match(body.error.code, /docker_unavailable|upstream_unreachable|model_load_failed/);
      const health = await getJson(`${proxy.url}/health`);
      assert.equal(health.status, 503);
      assert.match(String(health.body.message), /Docker is unreachable/);
    } finally {
      if (!(await dockerAnswers())) await startDockerd();
    }

    await waitFor("service to resume", async () => {
      return (await post(proxy.url, chatBody("a"))).status === 200;
    }, { timeoutMs: 60_000, intervalMs: 250 });
    assert.equal((await getJson(`${proxy.url}/health`)).status, 200);
  });
});
