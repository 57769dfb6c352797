/**
 * Containers from config: a model's `container:` block lets the proxy create its container
 * through the Docker API (at start-up and whenever it is missing), and create it anew when
 * the block changed. Real Docker, real containers of the look-alike image.
 */
import assert from "node:assert/strict";
import { createRequest } from "../lib/container_spec.ts";
import { parseConfig } from "../lib/config.ts";
import type { DockerApi } from "../lib/docker.ts";
import { chatBody, getJson, post } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { startTestProxy } from "./support/proxy.ts";

const ADMIN_KEY = "containers-admin-key-0123456789";

const BASE = {
  image: "ghcr.io/ggml-org/llama.cpp:server-cuda",
  command: ["-m", "/models/qwen.gguf", "--port", "8080"],
  entrypoint: null,
  ports: ["127.0.0.1:8080:8080", "9090:9090/udp"],
  volumes: ["/srv/models:/models:ro"],
  devices: ["/dev/kfd", "/dev/dri:/dev/dri:rw"],
  env: { LLAMA_ARG_CTX_SIZE: "16384" },
  gpus: null,
  groupAdd: ["video"],
  labels: { team: "home" },
};

Deno.test("createRequest() turns a container block into Docker's create body", () => {
  const body = createRequest({ ...BASE, gpus: "all" }, "qwen", "abc123");
  assert.equal(body.Image, BASE.image);
  assert.deepEqual(body.Cmd, BASE.command);
  assert.equal(body.Entrypoint, undefined);
  assert.deepEqual(body.Env, ["LLAMA_ARG_CTX_SIZE=16384"]);
  assert.deepEqual(body.Labels, {
    team: "home",
    "lqp.managed": "true",
    "lqp.model": "qwen",
    "lqp.spec": "abc123",
  });
  assert.deepEqual(body.ExposedPorts, { "8080/tcp": {}, "9090/udp": {} });
  assert.deepEqual(body.HostConfig.PortBindings, {
    "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "8080" }],
    "9090/udp": [{ HostIp: "", HostPort: "9090" }],
  });
  assert.deepEqual(body.HostConfig.Binds, ["/srv/models:/models:ro"]);
  assert.deepEqual(body.HostConfig.Devices, [
    { PathOnHost: "/dev/kfd", PathInContainer: "/dev/kfd", CgroupPermissions: "rwm" },
    { PathOnHost: "/dev/dri", PathInContainer: "/dev/dri", CgroupPermissions: "rw" },
  ]);
  assert.deepEqual(body.HostConfig.DeviceRequests, [
    { Driver: "", Capabilities: [["gpu"]], Options: {}, Count: -1 },
  ]);
  assert.deepEqual(body.HostConfig.GroupAdd, ["video"]);
  assert.deepEqual(body.HostConfig.RestartPolicy, { Name: "no" });
  assert.deepEqual(
    createRequest({ ...BASE, gpus: ["0", "2"] }, "q", "d").HostConfig.DeviceRequests,
    [{ Driver: "", Capabilities: [["gpu"]], Options: {}, DeviceIDs: ["0", "2"] }],
  );
  assert.equal(createRequest(BASE, "q", "d").HostConfig.DeviceRequests, undefined);
});

Deno.test("config: a container block is checked key by key, with lines", () => {
  const text = [
    "models:",
    "  qwen:",
    "    container_name: llama-qwen",
    "    backend_url: http://localhost:8080/v1",
    "    container:",
    "      image: ghcr.io/ggml-org/llama.cpp:server-cuda",
    "      command: -m /models/qwen.gguf --port 8080",
    "      ports: ['8080']",
    "      volumes: ['models']",
    "      gpus: all",
    "      env: {THREADS: 8}",
  ].join("\n");
  assert.throws(() => parseConfig(text, "c.yml"), (err: Error) => {
    assert.match(err.message, /models\.qwen\.container\.ports\.0 \(line 8\): expected "\[ip:\]/);
    assert.match(
      err.message,
      /models\.qwen\.container\.volumes\.0 \(line 9\): expected "host_path/,
    );
    return true;
  });
  const fixed = text.replace("['8080']", "['8080:8080']").replace("['models']", "[]");
  const model = parseConfig(fixed, "c.yml").models[0];
  assert.deepEqual(model.container?.command, ["-m", "/models/qwen.gguf", "--port", "8080"]);
  assert.deepEqual(model.container?.env, { THREADS: "8" });
  assert.equal(model.container?.gpus, "all");
});

async function inspect(api: DockerApi, name: string) {
  const res = await api.request("GET", `/containers/${name}/json`);
  if (res.status === 404) return await res.body?.cancel() ?? null;
  return await res.json() as { Id: string; Config: { Labels: Record<string, string> } };
}

Deno.test("container blocks: the proxy creates missing containers at start-up and again when one is removed", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [
      { id: "a", fromConfig: true },
      { id: "b", fromConfig: true },
    ]);
    assert.equal(await inspect(api, lab.containerOf("a")), null);
    await using proxy = await startTestProxy(lab.configYaml(`admin_key: ${ADMIN_KEY}`));
    await proxy.reconciled;
    for (const id of ["a", "b"]) {
      const made = await inspect(api, lab.containerOf(id));
      assert.ok(made, `container for ${id} created at start-up`);
      assert.equal(made.Config.Labels["lqp.managed"], "true");
      assert.equal(made.Config.Labels["lqp.model"], id);
    }
    const health = await getJson(`${proxy.url}/health`);
    assert.equal(health.body.message, "Proxy is operational");
    const running = await fetch(`${proxy.url}/admin/running`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    });
    assert.deepEqual(
      (await running.json()).containers.map((c: { exists: boolean; managed: boolean }) => [
        c.exists,
        c.managed,
      ]),
      [[true, true], [true, true]],
    );
    assert.deepEqual(await lab.running(), [], "created, not started");

    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    assert.equal((await post(proxy.url, chatBody("b"))).status, 200);
    assert.deepEqual(await lab.running(), [lab.containerOf("b")]);

    // Someone removes a's container: the next request for a creates it again.
    const gone = await api.request("DELETE", `/containers/${lab.containerOf("a")}?force=1`);
    await gone.body?.cancel();
    const again = await post(proxy.url, chatBody("a"));
    assert.equal(again.status, 200);
    assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
  } finally {
    api.close();
  }
});

Deno.test("container blocks: a changed block means a new container; a missing image says to pull it", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [
      { id: "a", fromConfig: true },
      { id: "ghost", fromConfig: true, image: "lqp-no-such-image:1" },
    ]);
    const first = await startTestProxy(lab.configYaml());
    await first.reconciled;
    assert.equal((await post(first.url, chatBody("a"))).status, 200);
    const before = await inspect(api, lab.containerOf("a"));
    const failed = await post(first.url, chatBody("ghost"));
    assert.equal(failed.status, 503);
    const error = (await failed.json()).error;
    assert.equal(error.code, "model_load_failed");
    assert.match(error.message, /No such image: lqp-no-such-image:1/);
    assert.match(error.message, /docker pull lqp-no-such-image:1/);
    await first.close(2000);
    const stop = await api.request("POST", `/containers/${lab.containerOf("a")}/stop?t=1`);
    await stop.body?.cancel();

    // Same name, new settings (token pace): the old container is replaced, not reused.
    const changed = lab.configYaml().replace('"FAKE_TOKEN_MS":"2"', '"FAKE_TOKEN_MS":"3"');
    assert.notEqual(changed, lab.configYaml());
    await using second = await startTestProxy(changed);
    await second.reconciled; // start-up replaced the stopped, outdated container
    const after = await inspect(api, lab.containerOf("a"));
    assert.ok(before && after);
    assert.notEqual(after.Id, before.Id);
    assert.notEqual(after.Config.Labels["lqp.spec"], before.Config.Labels["lqp.spec"]);
    assert.equal((await post(second.url, chatBody("a"))).status, 200);
  } finally {
    api.close();
  }
});
