/**
 * @module
 * A homelab in miniature: several look-alike llama-server containers that all publish the
 * same host port, created for one test and removed after it, plus a config.yml for them.
 */
import type { DockerApi } from "../../lib/docker.ts";
import { OWNER_LABEL } from "./docker_env.ts";
import { ensureFakeLlamaImage } from "./fake_llama_image.ts";
import { freePort } from "./free_port.ts";

export interface FakeModelSpec {
  /** Model id in the config; the container is named after it with a per-test prefix. */
  id: string;
  loadMs?: number;
  mode?: "normal" | "exit" | "never";
  slots?: number;
  tokenMs?: number;
  startupTimeoutS?: number;
  /** Leave the container out of Docker (config still names it). */
  missing?: boolean;
  /** Publish on a host port of its own instead of the shared one. */
  ownPort?: boolean;
  /** Keep a log of received requests for `state()` (benchmarks turn it off). */
  record?: boolean;
  /** The model's `on_disconnect` in the config. */
  onDisconnect?: "abort" | "finish";
  /** The model's idle `ttl` (seconds) in the config. */
  ttlS?: number;
  /** The model's `wait_feedback` in the config. */
  waitFeedback?: "comment" | "reasoning";
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
  release(): Promise<number>;
  start(id: string): Promise<void>;
  remove(): Promise<void>;
}

export async function createHomelab(
  api: DockerApi,
  specs: FakeModelSpec[],
): Promise<FakeHomelab> {
  const image = await ensureFakeLlamaImage(api);
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

  try {
    for (const spec of specs) {
      if (spec.missing) continue;
      const name = containerOf(spec.id);
      const res = await api.call("POST", `/containers/create?name=${name}`, {
        json: {
          Image: image,
          Cmd: [
            "/deno",
            "run",
            "--unstable-no-legacy-abort",
            "--allow-net",
            "--allow-env",
            "--allow-read=/tmp",
            "--allow-write=/tmp",
            "/fake_llama.ts",
          ],
          Env: [
            "DENO_DIR=/tmp/deno",
            "HOME=/tmp",
            "DENO_NO_UPDATE_CHECK=1",
            `FAKE_ALIAS=${spec.id}`,
            `FAKE_LOAD_MS=${spec.loadMs ?? 150}`,
            `FAKE_MODE=${spec.mode ?? "normal"}`,
            `FAKE_SLOTS=${spec.slots ?? 2}`,
            `FAKE_TOKEN_MS=${spec.tokenMs ?? 2}`,
            `FAKE_RECORD=${spec.record === false ? 0 : 1}`,
          ],
          Labels: { "lqp.test": prefix, [OWNER_LABEL]: String(Deno.pid) },
          ExposedPorts: { "8080/tcp": {} },
          HostConfig: {
            PortBindings: {
              "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: String(portOf(spec.id)) }],
            },
          },
        },
      });
      await res.body?.cancel();
      created.push(name);
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
    async release() {
      const res = await fetch(`${base()}/_fake/release`, { method: "POST" });
      return (await res.json()).released;
    },
    async start(id) {
      const res = await api.call("POST", `/containers/${containerOf(id)}/start`);
      await res.body?.cancel();
    },
    remove,
    [Symbol.asyncDispose]: remove,
  };
}
