/**
 * @module
 * Real client libraries that send a chat request and give up on it `cancelMs` later, the
 * way applications do: Python `openai`, `httpx` and `aiohttp` (task cancelled), the Node
 * `openai` npm client (AbortController), Deno's fetch (AbortController) and curl (SIGINT).
 * The Python and Node ones run in one long-lived child process each (tests/clients/), fed
 * one scenario per line, so interpreter start-up is paid once.
 */
import { CLIENT_TOOLS, requireClientTools } from "./client_tools.ts";
import { splitLines } from "../../lib/text_lines.ts";

export const CLIENTS = [
  "python-openai",
  "httpx",
  "aiohttp",
  "node-openai",
  "deno-fetch",
  "curl",
] as const;
export type ClientName = typeof CLIENTS[number];

export interface CancelResult {
  /** cancelled: the client gave up before an answer ended; finished: it ended first. */
  outcome: "cancelled" | "finished";
  status: number | null;
  error: string | null;
}

/** A child speaking the line protocol of tests/clients/cancel_client.*. */
class LineChild {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;
  #stderr: Promise<string>;

  constructor(cmd: string, args: string[]) {
    this.#child = new Deno.Command(cmd, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = this.#child.stdout.pipeThrough(new TextDecoderStream())
      .pipeThrough(splitLines())[Symbol.asyncIterator]();
    this.#stderr = new Response(this.#child.stderr).text();
  }

  async ask(request: unknown): Promise<CancelResult> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(request) + "\n"));
    const next = await this.#lines.next();
    if (next.done) throw new Error(`client process exited: ${await this.#stderr}`);
    return JSON.parse(next.value);
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 5000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#lines.return?.();
    await this.#stderr;
  }
}

export class CancellingClients implements AsyncDisposable {
  #python: LineChild;
  #node: LineChild;

  private constructor() {
    this.#python = new LineChild(CLIENT_TOOLS.python, [CLIENT_TOOLS.pythonScript]);
    this.#node = new LineChild("node", [CLIENT_TOOLS.nodeScript]);
  }

  /** Starts the client processes; fails with what to install when a library is missing. */
  static async start(): Promise<CancellingClients> {
    await requireClientTools();
    return new CancellingClients();
  }

  /** Sends `body` to the proxy's chat route with `client`; gives up `cancelMs` after sending. */
  send(
    client: ClientName,
    baseUrl: string,
    body: unknown,
    cancelMs: number,
  ): Promise<CancelResult> {
    const scenario = { base_url: baseUrl, body, cancel_ms: cancelMs };
    switch (client) {
      case "python-openai":
        return this.#python.ask({ ...scenario, client: "openai" });
      case "httpx":
      case "aiohttp":
        return this.#python.ask({ ...scenario, client });
      case "node-openai":
        return this.#node.ask(scenario);
      case "deno-fetch":
        return denoFetch(baseUrl, body, cancelMs);
      case "curl":
        return curl(baseUrl, body, cancelMs);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all([this.#python.close(), this.#node.close()]);
  }
}

async function denoFetch(baseUrl: string, body: unknown, cancelMs: number): Promise<CancelResult> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), cancelMs);
  try {
    const res = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: abort.signal,
    });
    await res.arrayBuffer();
    return { outcome: "finished", status: res.status, error: null };
  } catch (err) {
    if (abort.signal.aborted) return { outcome: "cancelled", status: null, error: null };
    return { outcome: "finished", status: null, error: String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** curl as a user runs it in a terminal, stopped with Ctrl-C (SIGINT). */
async function curl(baseUrl: string, body: unknown, cancelMs: number): Promise<CancelResult> {
  const child = new Deno.Command("curl", {
    args: [
      "-sS",
      "-N",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-H",
      "content-type: application/json",
      "--data-binary",
      JSON.stringify(body),
      `${baseUrl}/v1/chat/completions`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let interrupted = false;
  const timer = setTimeout(() => {
    interrupted = true;
    child.kill("SIGINT");
  }, cancelMs);
  const { stdout, stderr } = await child.output();
  clearTimeout(timer);
  if (interrupted) return { outcome: "cancelled", status: null, error: null };
  const status = Number(new TextDecoder().decode(stdout)) || null;
  return { outcome: "finished", status, error: new TextDecoder().decode(stderr) || null };
}
