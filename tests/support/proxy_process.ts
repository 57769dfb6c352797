/**
 * @module
 * The proxy as its own process, started with the `start` task's command run directly:
 * signals (SIGKILL, SIGTERM, SIGHUP) must reach the proxy itself, and `deno task` would
 * leave its child running.
 */
const ROOT = new URL("../..", import.meta.url).pathname;

export async function startProxyProcess(
  configPath: string,
  port: number,
  { output = "null" }: { output?: "null" | "piped" } = {},
): Promise<Deno.ChildProcess> {
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks;
  const [command, ...args] = (tasks.start as string).split(" ");
  return new Deno.Command(command, {
    args: [...args, "--config", configPath],
    cwd: ROOT,
    env: { LQP_PORT: String(port) },
    stdout: output,
    stderr: output,
  }).spawn();
}
