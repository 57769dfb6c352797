/**
 * The Docker Engine client against a real dockerd: the calls the model manager relies on,
 * with the Engine's quirks (304 on start/stop, 404 wording, multiplexed logs).
 */
import assert from "node:assert/strict";
import {
  ContainerNotFoundError,
  DockerApi,
  dockerForContainers,
  DockerUnavailableError,
} from "../lib/docker.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { waitFor } from "./support/wait_for.ts";

Deno.test("dockerForContainers(): start, inspect, stop and 304 on repeats", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    const name = lab.containerOf("a");
    const docker = dockerForContainers(api, [name]);
    assert.equal((await docker.inspect(name)).status, "created");
    await docker.start(name);
    await docker.start(name); // already running: Docker says 304, which is success
    const running = await docker.inspect(name);
    assert.equal(running.running, true);
    // Stop only once the look-alike installed its SIGTERM handler (it answers HTTP by then);
    // before that, PID 1 ignores SIGTERM and Docker waits out the grace period.
    await waitFor("look-alike up", async () => (await lab.state()).alias === "a");
    assert.deepEqual(await docker.list(), [{ name, running: true }]);
    await docker.stop(name, 5);
    await docker.stop(name, 5); // already stopped: 304
    const stopped = await docker.inspect(name);
    assert.equal(stopped.running, false);
    assert.equal(stopped.status, "exited");
  } finally {
    api.close();
  }
});

Deno.test("dockerForContainers(): logTail() demultiplexes stdout and stderr", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "bad", mode: "exit" }]);
    const name = lab.containerOf("bad");
    const docker = dockerForContainers(api, [name]);
    await docker.start(name);
    await waitFor("container to exit", async () => !(await docker.inspect(name)).running);
    // stdout and stderr are separate pipes, so Docker may order their lines either way.
    const tail = await docker.logTail(name, 4);
    assert.deepEqual(tail.trimEnd().split("\n").sort(), [
      "llama_model_load: error loading model: tensor 'output.weight' data is not within the file bounds",
      "main: exiting due to model loading error",
      "main: n_parallel = 2, alias = bad",
      "srv    load_model: loading model '/models/tiny.gguf'",
    ]);
    assert.equal((await docker.logTail(name, 1)).split("\n").filter(Boolean).length, 1);
    assert.equal((await docker.inspect(name)).exitCode, 1);
  } finally {
    api.close();
  }
});

Deno.test("dockerForContainers(): events() brings the allowed containers' only, and follows allow()", async () => {
  const api = await requireDocker();
  const stop = new AbortController();
  try {
    // Containers that exit at once: each start is a start and a die, with no stop to wait for.
    await using lab = await createHomelab(api, [
      { id: "x", mode: "exit", ownPort: true },
      { id: "y", mode: "exit", ownPort: true },
    ]);
    const [x, y] = [lab.containerOf("x"), lab.containerOf("y")];
    const docker = dockerForContainers(api, [x]);
    const seen: string[] = [];
    const following = (async () => {
      for await (const event of docker.events(stop.signal)) {
        seen.push(`${event.action} ${event.name}`);
      }
    })().catch(() => {});
    // The stream opens in the background: start again until it saw one.
    await waitFor("x's events", async () => {
      if (seen.includes(`die ${x}`)) return true;
      // y is not allowed yet: started behind the face's back, its events must not come.
      await api.call("POST", `/containers/${y}/start`).then((res) => res.body?.cancel());
      await docker.start(x);
      return false;
    }, { intervalMs: 200 });
    assert.ok(!seen.some((event) => event.endsWith(y)), `y is not allowed: ${seen}`);
    // Once: the stream reopened for the new names must not miss what happened meanwhile.
    docker.allow([x, y]);
    await docker.start(y);
    await waitFor("y's events", () => Promise.resolve(seen.includes(`die ${y}`)));
    stop.abort();
    await following;
  } finally {
    stop.abort();
    api.close();
  }
});

Deno.test("dockerForContainers(): a missing container is 'Container not found: NAME'", async () => {
  const api = await requireDocker();
  try {
    const name = `lqp-test-absent-${crypto.randomUUID().slice(0, 8)}`;
    const docker = dockerForContainers(api, [name]);
    await assert.rejects(docker.start(name), (err) => {
      assert.ok(err instanceof ContainerNotFoundError);
      assert.equal(err.message, `Container not found: ${name}`);
      return true;
    });
  } finally {
    api.close();
  }
});

Deno.test("dockerForContainers() refuses names outside the config before any request", async () => {
  // A socket that does not exist: had a request been made, the error would be another one.
  const api = new DockerApi(`/tmp/lqp-none-${crypto.randomUUID()}.sock`);
  try {
    const docker = dockerForContainers(api, ["allowed"]);
    await assert.rejects(docker.stop("dockerd-host", 0), /not named in the config/);
    await assert.rejects(docker.inspect("../../containers/x"), /not named in the config/);
    await assert.rejects(docker.inspect("allowed"), DockerUnavailableError);
  } finally {
    api.close();
  }
});

Deno.test("DockerApi negotiates an API version the daemon supports", async () => {
  const api = await requireDocker();
  try {
    const res = await api.call("GET", "/version");
    const body = await res.json();
    assert.ok(typeof body.ApiVersion === "string");
    // The request above went to /vX.Y/version; a rejected version would have been a 400.
    assert.equal(res.status, 200);
  } finally {
    api.close();
  }
});
