/**
 * @module
 * The proxy as its own process, started with the `start` task's command run directly:
 * signals (SIGKILL, SIGTERM, SIGHUP) must reach the proxy itself, and `deno task` would
 * leave its child running.
 */
import { freePort } from "../../demo/free_port.ts";
import { watchOutput } from "./process_output.ts";
import { waitFor } from "./wait_for.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

export async function startProxyProcess(
  configPath: string,
  port: number,
  { output = "null", env = {} }: { output?: "null" | "piped"; env?: Record<string, string> } = {},
): Promise<Deno.ChildProcess> {
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks;
  const [command, ...args] = (tasks.start as string).split(" ");
  return new Deno.Command(command, {
    args: [...args, "--config", configPath],
    cwd: ROOT,
    env: { ...env, LQP_PORT: String(port) },
    stdout: output,
    stderr: output,
  }).spawn();
}

export interface ProxyProcess extends AsyncDisposable {
  url: string;
  port: number;
  pid: number;
  /** For signals and the exit status. */
  child: Deno.ChildProcess;
  /** What it printed so far (log lines). */
  readonly output: string;
}

/**
 * Runs the proxy as users do, from `configText` (written to a temp dir) and `env`, once it
 * answers /health; disposing kills it and removes the config.
 */
export async function runProxyProcess(
  configText: string,
  { env = {}, port = freePort() }: {
    env?: Record<string, string>;
    /** A port the config already names (a cluster node's advertise_url); else a free one. */
    port?: number;
  } = {},
): Promise<ProxyProcess> {
  const dir = await Deno.makeTempDir({ prefix: "lqp-proc-" });
  const path = `${dir}/config.yml`;
  await Deno.writeTextFile(path, configText);
  const url = `http://127.0.0.1:${port}`;
  const proc = watchOutput(await startProxyProcess(path, port, { output: "piped", env }));
  const dispose = async () => {
    await proc[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await waitFor("the proxy process to answer /health", async () => {
      await (await fetch(`${url}/health`)).body?.cancel();
      return true;
    });
  } catch (err) {
    await dispose();
    throw new Error(`${err}\n${proc.output}`);
  }
  return {
    url,
    port,
    pid: proc.child.pid,
    child: proc.child,
    get output() {
      return proc.output;
    },
    [Symbol.asyncDispose]: dispose,
  };
}
