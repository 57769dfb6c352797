/**
 * @module
 * The real Docker Engine the integration tests drive. A missing daemon is a failure with an
 * install hint, never a skip.
 */
import { DockerApi } from "../../lib/docker.ts";
import { splitLines } from "../../lib/text_lines.ts";
import type { FakeHomelab } from "./fake_models.ts";

export const DOCKER_SOCKET = Deno.env.get("DOCKER_SOCKET") ?? "/var/run/docker.sock";

const HINT = "These tests need a running Docker Engine: install it with " +
  "`apt-get install -y docker.io`, start `dockerd` (as root), and check that " +
  `${DOCKER_SOCKET} exists. \`bash .ci/run\` does all of this.`;

let sweptLeftovers = false;

/** Label every test container carries: the pid of the test process that made it. */
export const OWNER_LABEL = "lqp.test.pid";

/** Whether a process with this pid exists on this machine. */
export async function processAlive(pid: number | string): Promise<boolean> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Containers left by a test process that died (killed mid-run) hold memory and ports:
 * remove them once. Containers of live processes (a parallel run, a benchmark spawned by a
 * test) are left alone.
 */
async function removeLeftovers(api: DockerApi): Promise<void> {
  if (sweptLeftovers) return;
  sweptLeftovers = true;
  const filters = encodeURIComponent(JSON.stringify({ label: [OWNER_LABEL] }));
  const res = await api.call("GET", `/containers/json?all=1&filters=${filters}`);
  const all = await res.json() as { Id: string; Labels: Record<string, string> }[];
  for (const { Id, Labels } of all) {
    if (await processAlive(Labels[OWNER_LABEL])) continue;
    await (await api.request("DELETE", `/containers/${Id}?force=1&v=1`)).body?.cancel();
  }
}

/** Opens the Docker API or throws an error that says what to install. */
export async function requireDocker(): Promise<DockerApi> {
  try {
    await Deno.stat(DOCKER_SOCKET);
  } catch {
    throw new Error(`No Docker socket at ${DOCKER_SOCKET}. ${HINT}`);
  }
  const api = new DockerApi(DOCKER_SOCKET);
  try {
    await api.ping(AbortSignal.timeout(5000));
  } catch (err) {
    api.close();
    throw new Error(`Docker at ${DOCKER_SOCKET} does not answer (${err}). ${HINT}`);
  }
  await removeLeftovers(api);
  return api;
}

/** Names of the containers labelled `lqp.test=<prefix>` that Docker started since `sinceMs`. */
export async function containerStarts(
  api: DockerApi,
  prefix: string,
  sinceMs: number,
): Promise<string[]> {
  const filters = encodeURIComponent(JSON.stringify({
    type: ["container"],
    event: ["start"],
    label: [`lqp.test=${prefix}`],
  }));
  const until = Math.ceil(Date.now() / 1000) + 1;
  const res = await api.call(
    "GET",
    `/events?since=${Math.floor(sinceMs / 1000) - 1}&until=${until}&filters=${filters}`,
  );
  return (await res.text()).trim().split("\n").filter(Boolean)
    .map((line) =>
      JSON.parse(line) as { Actor: { Attributes: { name: string } }; timeNano: number }
    )
    .filter((e) => e.timeNano >= sinceMs * 1e6)
    .map((e) => e.Actor.Attributes.name);
}

/** A start or a death of one of a lab's containers, as Docker reported it. */
export interface ContainerEvent {
  action: "start" | "die";
  name: string;
}

/**
 * Follows Docker's event stream for the lab's containers and calls `check` with the set
 * running after every start and every death, in Docker's own order. `stop()` ends it and says
 * how many events were seen.
 */
export async function followRunning(
  api: DockerApi,
  lab: FakeHomelab,
  check: (running: ReadonlySet<string>, event: ContainerEvent) => void,
): Promise<{ stop(): Promise<number> }> {
  const filters = encodeURIComponent(JSON.stringify({
    type: ["container"],
    event: ["start", "die"],
    label: [`lqp.test=${lab.prefix}`],
  }));
  const abort = new AbortController();
  const res = await api.call("GET", `/events?filters=${filters}`, { signal: abort.signal });
  // Listed after subscribing, so no event falls between the list and the stream.
  const running = new Set(await lab.running());
  let events = 0;
  const reading = (async () => {
    const lines = res.body!.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines());
    for await (const line of lines) {
      const event = JSON.parse(line) as {
        Action: "start" | "die";
        Actor: { Attributes: { name: string } };
      };
      const name = event.Actor.Attributes.name;
      if (event.Action === "start") running.add(name);
      else running.delete(name);
      events++;
      check(running, { action: event.Action, name });
    }
  })().catch((err) => {
    if (!abort.signal.aborted) throw err;
  });
  return {
    async stop() {
      abort.abort();
      await reading;
      return events;
    },
  };
}
