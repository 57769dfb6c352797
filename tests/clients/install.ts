/**
 * `deno task test` runs this first: it makes the client libraries the disconnect tests drive
 * (Python `openai`/`httpx`/`aiohttp` in `.venv`, the Node `openai` package in
 * tests/clients/node_modules) from their pinned lists, and does nothing when they are
 * already installed from the same lists. Needs python3 with venv and Node.js with npm.
 */
import { CLIENT_TOOLS } from "../support/client_tools.ts";

const here = new URL(".", import.meta.url).pathname;

async function run(what: string, cmd: string, args: string[], cwd?: string): Promise<void> {
  console.log(`[tools] ${what}`);
  let child;
  try {
    child = new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).spawn();
  } catch (err) {
    fail(`${cmd} is not installed (${err instanceof Error ? err.message : err})`);
  }
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) {
    const text = new TextDecoder().decode(stderr).trim() || new TextDecoder().decode(stdout);
    fail(`${cmd} ${args.join(" ")} failed:\n${text.split("\n").slice(-15).join("\n")}`);
  }
}

function fail(message: string): never {
  console.error(`[tools] ${message}\n[tools] ${CLIENT_TOOLS.hint}`);
  Deno.exit(1);
}

async function digest(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function readOr(path: string, fallback: string): Promise<string> {
  return await Deno.readTextFile(path).catch(() => fallback);
}

/** Installs into `dir` unless its stamp says the same list is already there. */
async function ensure(stamp: string, list: string, install: () => Promise<void>): Promise<void> {
  const want = await digest(list);
  if ((await readOr(stamp, "")).trim() === want) return;
  await install();
  await Deno.writeTextFile(stamp, want);
}

const requirements = `${here}requirements.txt`;
await ensure(`${CLIENT_TOOLS.venv}/.installed`, requirements, async () => {
  await Deno.remove(CLIENT_TOOLS.venv, { recursive: true }).catch(() => {});
  await run(`python3 -m venv ${CLIENT_TOOLS.venv}`, "python3", ["-m", "venv", CLIENT_TOOLS.venv]);
  // --retries 0: where PyPI is unreachable but a local index is configured, do not spend
  // minutes retrying the unreachable one.
  await run("pip install the Python clients", CLIENT_TOOLS.python, [
    "-m",
    "pip",
    "install",
    "--quiet",
    "--retries",
    "0",
    "--require-virtualenv",
    "-r",
    requirements,
  ]);
});
await ensure(`${here}node_modules/.installed`, `${here}package-lock.json`, async () => {
  await run("npm ci the Node openai client", "npm", ["ci", "--no-audit", "--no-fund"], here);
});
