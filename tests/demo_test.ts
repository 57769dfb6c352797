/**
 * `deno task demo` as a newcomer runs it: it prints where to look, a request swaps a model in,
 * the dashboard saw it, and Ctrl-C leaves no container behind.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { watchOutput } from "./support/process_output.ts";
import { waitFor } from "./support/wait_for.ts";

const DEMO = new URL("../demo/main.ts", import.meta.url).pathname;

async function demoContainers(): Promise<string[]> {
  const api = await requireDocker();
  try {
    const filters = encodeURIComponent(JSON.stringify({ label: ["lqp.demo"] }));
    const res = await api.call("GET", `/containers/json?all=1&filters=${filters}`);
    return (await res.json() as { Names: string[] }[]).map((c) => c.Names[0]);
  } finally {
    api.close();
  }
}

Deno.test("deno task demo: prints the dashboard and curl lines, serves a swap, and Ctrl-C cleans up", async () => {
  // Its own directory: the demo writes data/demo.yml where it runs.
  const dir = await Deno.makeTempDir({ prefix: "lqp-demo-" });
  try {
    await using demo = watchOutput(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", DEMO],
        cwd: dir,
        env: { LQP_PORT: "0" },
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    );
    await waitFor("the demo to say it is ready", () => demo.output.includes("demo: ready"), {
      timeoutMs: 90_000,
    });
    const output = demo.output;
    const dashboard = /Dashboard\s+(http:\/\/\S+)\/dashboard/.exec(output)?.[1];
    assert.ok(dashboard, `no dashboard URL in:\n${output}`);
    assert.match(output, /curl -s http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions/);
    const models = (await getJson(`${dashboard}/v1/models`)).body.data as unknown[];
    assert.equal(models.length, 3);
    assert.equal((await demoContainers()).length, 3, "the proxy created the three containers");

    const res = await post(dashboard, chatBody("qwen2.5-7b"));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).model, "qwen2.5-7b");
    const state = (await getJson(`${dashboard}/dashboard/state`)).body;
    const swaps = state.swaps as { from: string | null; to: string }[];
    assert.deepEqual(swaps.map((s) => [s.from, s.to]), [[null, "qwen2.5-7b"]]);
    assert.equal(
      await Deno.readTextFile(`${dir}/data/demo.yml`).then((t) => t.includes("qwen")),
      true,
    );

    demo.child.kill("SIGINT");
    assert.equal((await demo.child.status).code, 0);
    assert.deepEqual(await demoContainers(), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
