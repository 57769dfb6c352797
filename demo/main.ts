/**
 * `deno task demo`: the proxy in one minute, no GPU needed. Builds the llama-server
 * look-alike's image, writes a config with three models whose containers share one port
 * (the proxy creates them from their `container:` blocks), starts the proxy and prints what
 * to try. Ctrl-C stops the proxy and removes the demo containers.
 */
import { parseConfig } from "../lib/config.ts";
import { DockerApi } from "../lib/docker.ts";
import { consoleLogger } from "../lib/log.ts";
import { freePort } from "./free_port.ts";
import { startProxy } from "../main.ts";
import {
  ensureLookAlikeImage,
  LOOK_ALIKE_COMMAND,
  LOOK_ALIKE_PORT,
  lookAlikeEnv,
} from "./look_alike_image.ts";

/** Label on every demo container, so a later run (or Ctrl-C) finds and removes them. */
const DEMO_LABEL = "lqp.demo";

/** Three "models" with load times long enough to watch a swap in the dashboard. */
const MODELS = [
  { id: "qwen2.5-7b", loadMs: 4000 },
  { id: "llama3.1-8b", loadMs: 6000 },
  { id: "mistral-small", loadMs: 5000 },
];

function fail(message: string): never {
  console.error(`demo: ${message}`);
  Deno.exit(1);
}

async function openDocker(socket: string): Promise<DockerApi> {
  const api = new DockerApi(socket);
  try {
    await api.ping(AbortSignal.timeout(5000));
    return api;
  } catch (err) {
    fail(
      `Docker does not answer at ${socket} (${err instanceof Error ? err.message : err}). ` +
        "Install it (apt-get install -y docker.io), start dockerd, and run again as a user " +
        "who may use the socket.",
    );
  }
}

/** Containers of an earlier demo run: removed so this run starts from the current image. */
async function removeDemoContainers(api: DockerApi): Promise<void> {
  const filters = encodeURIComponent(JSON.stringify({ label: [DEMO_LABEL] }));
  const res = await api.call("GET", `/containers/json?all=1&filters=${filters}`);
  const list = await res.json() as { Id: string }[];
  await Promise.all(list.map(async ({ Id }) => {
    await (await api.request("DELETE", `/containers/${Id}?force=1`)).body?.cancel();
  }));
}

function demoConfig(
  image: string,
  backendPort: number,
  listen: { host: string; port: number },
  adminKey: string,
) {
  const models = MODELS.map((m) =>
    [
      `  ${m.id}:`,
      `    container_name: lqp-demo-${m.id}`,
      `    backend_url: http://127.0.0.1:${backendPort}/v1`,
      `    load_time: ${m.loadMs / 1000}`,
      `    startup_timeout: 60`,
      `    wait_feedback: reasoning`,
      `    container:`,
      `      image: ${image}`,
      `      command: ${JSON.stringify(LOOK_ALIKE_COMMAND)}`,
      `      ports: ["127.0.0.1:${backendPort}:${LOOK_ALIKE_PORT}"]`,
      `      env: ${JSON.stringify(lookAlikeEnv({ alias: m.id, loadMs: m.loadMs, tokenMs: 80 }))}`,
      `      labels: {"${DEMO_LABEL}": "true"}`,
    ].join("\n")
  ).join("\n");
  return [
    "# Written by `deno task demo`: three look-alike models sharing one port.",
    `host: ${listen.host}`,
    `port: ${listen.port}`,
    "num_workers: 2",
    "stop_timeout: 2",
    `admin_key: ${adminKey}`,
    "store:",
    "  type: memory",
    "models:",
    models,
    "",
  ].join("\n");
}

async function main(): Promise<void> {
  const socket = Deno.env.get("DOCKER_SOCKET") ?? "/var/run/docker.sock";
  // Local only unless asked: the demo has no API keys.
  const listen = {
    host: Deno.env.get("LQP_HOST") || "127.0.0.1",
    port: Number(Deno.env.get("LQP_PORT") ?? 8888),
  };
  const api = await openDocker(socket);
  console.log("demo: building the look-alike image (once per change)…");
  const image = await ensureLookAlikeImage(api);
  await removeDemoContainers(api);

  const adminKey = `demo-admin-${crypto.randomUUID().slice(0, 12)}`;
  // The look-alikes share this port; nothing listens on it now.
  const text = demoConfig(image, freePort(), listen, adminKey);
  await Deno.mkdir("data", { recursive: true });
  await Deno.writeTextFile("data/demo.yml", text);
  const config = parseConfig(`docker_socket: ${socket}\n${text}`, "data/demo.yml");

  const proxy = await startProxy(config, { log: consoleLogger(), loadProgressMs: 2000 })
    .catch(async (err) => {
      await removeDemoContainers(api);
      fail(`the proxy did not start: ${err instanceof Error ? err.message : err}`);
    });
  await proxy.reconciled;
  const url = proxy.url;
  const [first, second] = MODELS.map((m) => m.id);
  const chat = (model: string, stream: boolean) =>
    `curl -s${stream ? "N" : ""} ${url}/v1/chat/completions -H 'content-type: application/json' ` +
    `-d '{"model":"${model}","messages":[{"role":"user","content":"hi"}]${
      stream ? ',"stream":true' : ""
    }}'`;
  console.log(`
demo: ready. Three models (${MODELS.map((m) => m.id).join(", ")}) share one port; only one runs.

  Dashboard   ${url}/dashboard      (admin key: ${adminKey})
  Config      data/demo.yml

  Try, and watch the dashboard swap models:
    ${chat(first, false)}
    ${chat(second, true)}
    curl -s ${url}/v1/models
    curl -s ${url}/queue

Ctrl-C stops the proxy and removes the demo containers.${
    listen.host === "127.0.0.1"
      ? "\nTo open the dashboard from another machine, run it with LQP_HOST=0.0.0.0."
      : ""
  }
`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    console.log("demo: stopping…");
    await proxy.close(2000);
    await removeDemoContainers(api);
    api.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}

if (import.meta.main) await main();
