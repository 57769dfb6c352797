/**
 * @module
 * A homelab in miniature: several look-alike llama-server containers that all publish the
 * same host port, created for one test and removed after it, plus a config.yml for them.
 */
import type { DockerApi } from "../../lib/docker.ts";
import { OWNER_LABEL } from "./docker_env.ts";
import {
  ensureLookAlikeImage,
  LOOK_ALIKE_COMMAND,
  LOOK_ALIKE_PORT,
  lookAlikeEnv,
  type LookAlikeSettings,
} from "../../demo/look_alike_image.ts";
import { type ContainerSpec, createRequest, specDigest } from "../../lib/container_spec.ts";
import { freePort } from "../../demo/free_port.ts";

/** A look-alike's own settings (its alias is the id) plus how the lab and config use it. */
export interface FakeModelSpec extends Omit<LookAlikeSettings, "alias"> {
  /** Model id in the config; the container is named after it with a per-test prefix. */
  id: string;
  startupTimeoutS?: number;
  /** Leave the container out of Docker (config still names it). */
  missing?: boolean;
  /** Publish on a host port of its own instead of the shared one. */
  ownPort?: boolean;
  /** The model's `on_disconnect` in the config. */
  onDisconnect?: "abort" | "finish";
  /** The model's idle `ttl` (seconds) in the config. */
  ttlS?: number;
  /** The model's `wait_feedback` in the config. */
  waitFeedback?: "comment" | "reasoning";
  /** Not created by the lab: the config gets a `container:` block and the proxy creates it. */
  fromConfig?: boolean;
  /** Image for a `fromConfig` container (default: the look-alike's). */
  image?: string;
  /** The model's declared `memory` (GB) in the config. */
  memoryGb?: number;
  /** The model's `kv_cache` block, as YAML flow (`{ save: true, dir: /x }`). */
  kvCache?: string;
  /** Extra llama-server-style arguments for the look-alike (`--slot-save-path /tmp/`). */
  args?: string[];
}

export interface FakeState {
  alias: string;
  inflight: number;
  max_inflight: number;
  disconnects: number;
  completed: number;
  received: { method: string; path: string; body: string; headers: Record<string, string> }[];
}

export interface FakeHomelab extends AsyncDisposable {
  hostPort: number;
  prefix: string;
  portOf(id: string): number;
  containerOf(id: string): string;
  /** config.yml text naming every spec (extra top-level YAML appended). */
  configYaml(extra?: string): string;
  /** Names of this homelab's containers that Docker reports running. */
  running(): Promise<string[]>;
  /** The look-alike answering on the shared port right now. */
  state(id?: string): Promise<FakeState>;
  /** Lets held requests go on, at the look-alike on the shared port or on `id`'s own. */
  release(id?: string): Promise<number>;
  start(id: string): Promise<void>;
  /**
   * SIGKILL to one of this lab's containers, by container name (a crash, from outside). One
   * that stopped meanwhile is left as it is (chaos loops race the proxy's own stops).
   */
  kill(container: string): Promise<void>;
  remove(): Promise<void>;
}

export async function createHomelab(
  api: DockerApi,
  specs: FakeModelSpec[],
): Promise<FakeHomelab> {
  const image = await ensureLookAlikeImage(api);
  const hostPort = freePort();
  const ports = new Map(specs.map((s) => [s.id, s.ownPort ? freePort() : hostPort]));
  const portOf = (id: string) => ports.get(id) ?? hostPort;
  const prefix = `lqp-test-${crypto.randomUUID().slice(0, 8)}`;
  const containerOf = (id: string) => `${prefix}-${id}`;
  const created: string[] = [];

  const remove = async () => {
    await Promise.all(created.map(async (name) => {
      const res = await api.request("DELETE", `/containers/${name}?force=1&v=1`);
      await res.body?.cancel();
    }));
  };

  const containerSpec = (spec: FakeModelSpec): ContainerSpec => ({
    image: spec.image ?? image,
    command: [...LOOK_ALIKE_COMMAND, ...(spec.args ?? [])],
    entrypoint: null,
    ports: [`127.0.0.1:${portOf(spec.id)}:${LOOK_ALIKE_PORT}`],
    volumes: [],
    devices: [],
    env: lookAlikeEnv({ ...spec, alias: spec.id }),
    gpus: null,
    groupAdd: [],
    labels: { "lqp.test": prefix, [OWNER_LABEL]: String(Deno.pid) },
  });

  try {
    for (const spec of specs) {
      const name = containerOf(spec.id);
      // Removed afterwards even when the proxy creates it.
      created.push(name);
      if (spec.missing || spec.fromConfig) continue;
      const container = containerSpec(spec);
      const body = createRequest(container, spec.id, await specDigest(container));
      await (await api.call("POST", `/containers/create?name=${name}`, { json: body })).body
        ?.cancel();
    }
  } catch (err) {
    await remove();
    throw err;
  }

  const base = (id?: string) => `http://127.0.0.1:${id ? portOf(id) : hostPort}`;
  return {
    hostPort,
    prefix,
    portOf,
    containerOf,
    configYaml(extra = "") {
      const models = specs.map((s) =>
        [
          `  ${s.id}:`,
          `    container_name: ${containerOf(s.id)}`,
          `    backend_url: ${base(s.id)}/v1`,
          `    health_url: ${base(s.id)}/health`,
          `    startup_timeout: ${s.startupTimeoutS ?? 30}`,
          ...(s.onDisconnect ? [`    on_disconnect: ${s.onDisconnect}`] : []),
          ...(s.ttlS ? [`    ttl: ${s.ttlS}`] : []),
          ...(s.waitFeedback ? [`    wait_feedback: ${s.waitFeedback}`] : []),
          ...(s.memoryGb ? [`    memory: ${s.memoryGb}`] : []),
          ...(s.kvCache ? [`    kv_cache: ${s.kvCache}`] : []),
          ...(s.fromConfig ? containerBlock(containerSpec(s)) : []),
        ].join("\n")
      );
      return `host: 127.0.0.1\nport: 0\nstop_timeout: 5\n${extra}\nmodels:\n${models.join("\n")}\n`;
    },
    async running() {
      const filters = encodeURIComponent(JSON.stringify({ label: [`lqp.test=${prefix}`] }));
      const res = await api.call("GET", `/containers/json?filters=${filters}`);
      const list = await res.json() as { Names: string[] }[];
      return list.map((c) => c.Names[0].replace(/^\//, ""));
    },
    async state(id) {
      const res = await fetch(`${base(id)}/_fake/state`);
      if (!res.ok) throw new Error(`look-alike state: HTTP ${res.status}`);
      return await res.json();
    },
    async release(id) {
      const res = await fetch(`${base(id)}/_fake/release`, { method: "POST" });
      return (await res.json()).released;
    },
    async start(id) {
      const res = await api.call("POST", `/containers/${containerOf(id)}/start`);
      await res.body?.cancel();
    },
    async kill(container) {
      const res = await api.request("POST", `/containers/${container}/kill?signal=SIGKILL`);
      await res.body?.cancel();
    },
    remove,
    [Symbol.asyncDispose]: remove,
  };
}

/** A `container:` block for config.yml (JSON is YAML, so values go in as JSON). */
function containerBlock(spec: ContainerSpec): string[] {
  return [
    "    container:",
    `      image: ${JSON.stringify(spec.image)}`,
    `      command: ${JSON.stringify(spec.command)}`,
    `      ports: ${JSON.stringify(spec.ports)}`,
    `      env: ${JSON.stringify(spec.env)}`,
    `      labels: ${JSON.stringify(spec.labels)}`,
  ];
}
