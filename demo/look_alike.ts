/**
 * @module
 * Our llama-server look-alike, run inside test containers (no imports: the image holds only
 * this file and a deno binary). It copies the behaviours the proxy depends on, from the
 * captured transcripts in shared/reference/llama-server-transcripts:
 * - 503 `Loading model` on every route for FAKE_LOAD_MS after start, then 200 on /health;
 * - FAKE_MODE=exit: logs a load error and exits 1 (a model that fails to load);
 *   FAKE_MODE=never: answers 503 forever;
 * - chat/completions JSON and SSE formats, FAKE_SLOTS requests decoded at once (others wait);
 * - a control surface for tests: GET /_fake/state (what arrived, in-flight counts,
 *   disconnects) and POST /_fake/release (lets requests sent with `"fake_hold": true` go on).
 * Per request, `"fake_tokens": N` sets the number of content chunks, `"fake_token_ms": T`
 * their interval, and `"fake_stamp": true` makes each chunk's content its send time (epoch
 * ms, fractional) so a benchmark can measure what a proxy adds per chunk.
 * FAKE_RECORD=0 stops recording requests (benchmarks send hundreds of thousands).
 * A client that closes its connection mid-request is noticed at once, as llama-server does
 * (FAKE_WATCH=0 turns that off for benchmarks; see `relay`).
 * `"fake_crash": true` kills the server before it answers; `"fake_crash_once": true` only
 * the first time.
 *
 * Prompt cache and slots, as llama-server (transcripts "KV slot save/restore"): a chat's prompt
 * is its messages rendered through a chat template and split into word tokens; each request
 * runs in the idle slot whose cache shares the longest prefix with it, and reports that
 * prefix as `usage.prompt_tokens_details.cached_tokens` (and `timings.cache_n`). `GET /slots`
 * lists the slots; with `--slot-save-path DIR` among its arguments, `POST /slots/{id}?action=
 * save|restore` `{"filename"}` writes a slot's cache to DIR/filename or reads it back (400 for
 * a missing or unreadable file); without it, 501 `not_supported_error`.
 */

const env = (name: string, fallback: string) => Deno.env.get(name) ?? fallback;
const alias = env("FAKE_ALIAS", "fake");
const loadMs = Number(env("FAKE_LOAD_MS", "150"));
const mode = env("FAKE_MODE", "normal");
const slots = Number(env("FAKE_SLOTS", "2"));
const tokenMs = Number(env("FAKE_TOKEN_MS", "2"));
const port = Number(env("FAKE_PORT", "8080"));
const record = env("FAKE_RECORD", "1") !== "0";
const watch = env("FAKE_WATCH", "1") !== "0";
/** Slow slot saves and restores (timeouts), and prompt processing per uncached token. */
const slotSaveMs = Number(env("FAKE_SLOT_SAVE_MS", "0"));
const slotRestoreMs = Number(env("FAKE_SLOT_RESTORE_MS", "0"));
const promptUs = Number(env("FAKE_PROMPT_US", "0"));
const savePathAt = Deno.args.indexOf("--slot-save-path");
const savePath = savePathAt < 0 ? null : Deno.args[savePathAt + 1].replace(/\/*$/, "/");

function crashedBefore(): boolean {
  try {
    Deno.statSync("/tmp/crashed");
    return true;
  } catch {
    return false;
  }
}

// PID 1 in a container ignores SIGTERM unless it handles it; llama-server exits cleanly.
Deno.addSignalListener("SIGTERM", () => {
  console.log("srv    operator(): operator(): cleaning up before exit...");
  Deno.exit(0);
});

console.log(`main: n_parallel = ${slots}, alias = ${alias}`);
console.log("srv    load_model: loading model '/models/tiny.gguf'");
if (mode === "exit") {
  console.error(
    "llama_model_load: error loading model: tensor 'output.weight' data is not within the file bounds",
  );
  console.error("main: exiting due to model loading error");
  Deno.exit(1);
}

const startedAt = Date.now();
const loaded = () => mode !== "never" && Date.now() - startedAt >= loadMs;
let loggedReady = false;

interface Received {
  method: string;
  path: string;
  body: string;
  headers: Record<string, string>;
}
const received: Received[] = [];
let inflight = 0;
let maxInflight = 0;
let decoding = 0;
let disconnects = 0;
let completed = 0;
const slotWaiters: (() => void)[] = [];
/** Each slot's cached tokens (prompt and answer of its last request) and when it was used. */
const slotCache = Array.from(
  { length: slots },
  () => ({ tokens: [] as string[], busy: false, used: 0 }),
);

/** Word tokens of a chat rendered as llama-server's default (ChatML) template renders it. */
function promptTokens(body: Record<string, unknown>): string[] {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const text =
    messages.map((m: { role?: string; content?: unknown }) =>
      `<|im_start|>${m.role}\n${typeof m.content === "string" ? m.content : ""}<|im_end|>\n`
    ).join("") + "<|im_start|>assistant\n";
  return typeof body.prompt === "string" ? body.prompt.split(/(?<=\s)/) : text.split(/(?<=\s)/);
}

function commonPrefix(a: string[], b: string[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/**
 * The idle slot that shares the longest prefix with `prompt`, else the least recently used,
 * with the length of that prefix (-1 when every slot is busy).
 */
function pickSlot(prompt: string[]): { id: number; shared: number } {
  let best = { id: -1, shared: -1 };
  for (let id = 0; id < slots; id++) {
    const slot = slotCache[id];
    if (slot.busy) continue;
    const shared = commonPrefix(slot.tokens, prompt);
    const better = best.id < 0 || shared > best.shared ||
      (shared === best.shared && slot.used < slotCache[best.id].used);
    if (better) best = { id, shared };
  }
  return best;
}

async function slotAction(id: number, action: string | null, text: string): Promise<Response> {
  if (savePath === null) {
    return json(
      501,
      errorBody(
        501,
        "This server does not support slots action. Start it with `--slot-save-path`",
        "not_supported_error",
      ),
    );
  }
  const filename = String(JSON.parse(text || "{}").filename ?? "");
  if (!(id >= 0 && id < slots) || filename === "" || filename.includes("/")) {
    return json(400, errorBody(400, "Invalid slot or filename", "invalid_request_error"));
  }
  const started = performance.now();
  const delay = action === "save" ? slotSaveMs : action === "restore" ? slotRestoreMs : 0;
  if (delay > 0) await new Promise((r) => setTimeout(r, delay));
  if (action === "save") {
    const bytes = new TextEncoder().encode(JSON.stringify({ alias, tokens: slotCache[id].tokens }));
    await Deno.writeFile(savePath + filename, bytes);
    return json(200, {
      id_slot: id,
      filename,
      n_saved: slotCache[id].tokens.length,
      n_written: bytes.byteLength,
      timings: { save_ms: performance.now() - started },
    });
  }
  if (action === "restore") {
    try {
      const bytes = await Deno.readFile(savePath + filename);
      const saved = JSON.parse(new TextDecoder().decode(bytes));
      if (!Array.isArray(saved.tokens)) throw new Error("no tokens");
      slotCache[id].tokens = saved.tokens;
      return json(200, {
        id_slot: id,
        filename,
        n_restored: saved.tokens.length,
        n_read: bytes.byteLength,
        timings: { restore_ms: performance.now() - started },
      });
    } catch {
      return json(
        400,
        errorBody(
          400,
          "Unable to restore slot: No available space in KV cache or invalid slot save file",
          "invalid_request_error",
        ),
      );
    }
  }
  return json(400, errorBody(400, "Invalid action", "invalid_request_error"));
}
let releaseHeld: (() => void)[] = [];

async function takeSlot(): Promise<void> {
  if (decoding < slots) {
    decoding++;
    return;
  }
  await new Promise<void>((resolve) => slotWaiters.push(resolve));
}

function freeSlot(): void {
  const next = slotWaiters.shift();
  if (next) next(); // the slot passes straight to the next waiter
  else decoding--;
}

function held(): Promise<void> {
  return new Promise((resolve) => releaseHeld.push(resolve));
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", server: "llama.cpp" },
  });

const errorBody = (code: number, message: string, type: string) => ({
  error: { code, message, type },
});

const words = [" Hello", " from", " the", " fake", " llama", " server", " again", " and"];

function chunk(id: string, created: number, delta: unknown, finish: string | null, kind: string) {
  const choice = kind === "chat" ? { finish_reason: finish, index: 0, delta } : {
    text: (delta as { content?: string }).content ?? "",
    index: 0,
    logprobs: null,
    finish_reason: finish,
  };
  return {
    choices: [choice],
    created,
    id,
    model: alias,
    system_fingerprint: "b1-fake",
    object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
  };
}

async function generate(
  req: Request,
  body: Record<string, unknown>,
  kind: "chat" | "text",
  gone: Set<() => void> | undefined,
) {
  const tokens = Number(body.fake_tokens ?? body.max_tokens ?? 4);
  const interval = Number(body.fake_token_ms ?? tokenMs);
  const stamp = body.fake_stamp === true;
  const content = (i: number) =>
    stamp ? String(performance.timeOrigin + performance.now()) : words[i % words.length];
  const hold = body.fake_hold === true;
  const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
  const created = Math.floor(Date.now() / 1000);
  const prompt = promptTokens(body);
  inflight++;
  maxInflight = Math.max(maxInflight, inflight);
  let finished = false;
  const end = (ok: boolean) => {
    if (finished) return;
    finished = true;
    inflight--;
    slot.busy = false;
    freeSlot();
    if (ok) completed++;
    else disconnects++;
    gone?.delete(left);
  };
  const left = () => end(false);
  req.signal.addEventListener("abort", left, { once: true });
  gone?.add(left);
  await takeSlot();
  const { id: slotId, shared } = pickSlot(prompt);
  const slot = slotCache[slotId];
  slot.busy = true;
  const cached = Math.min(shared, prompt.length - 1);
  const answer = Array.from({ length: tokens }, (_, i) => words[i % words.length]);
  // The slot keeps this prompt and its answer, as llama-server's cache does.
  slot.tokens = [...prompt, ...answer.join("").split(/(?<=\s)/)];
  slot.used = Date.now();
  // Prompt processing: only what the slot's cache does not already hold.
  const promptMs = ((prompt.length - cached) * promptUs) / 1000;
  if (promptMs >= 1) await new Promise((r) => setTimeout(r, promptMs));
  const usage = {
    completion_tokens: tokens,
    prompt_tokens: prompt.length,
    total_tokens: tokens + prompt.length,
    prompt_tokens_details: { cached_tokens: cached },
  };

  if (body.stream !== true) {
    if (hold) await held();
    if (interval * tokens > 0) await new Promise((r) => setTimeout(r, interval * tokens));
    const text = answer.join("");
    end(true);
    const choice = kind === "chat"
      ? { finish_reason: "length", index: 0, message: { role: "assistant", content: text } }
      : { text, index: 0, logprobs: null, finish_reason: "length" };
    return json(200, {
      choices: [choice],
      created,
      model: alias,
      system_fingerprint: "b1-fake",
      object: kind === "chat" ? "chat.completion" : "text_completion",
      usage,
      id,
    });
  }

  const encoder = new TextEncoder();
  const frame = (data: unknown) => encoder.encode(`data: ${JSON.stringify(data)}\n\n`);
  const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)
    ?.include_usage === true;
  const stream = new ReadableStream<Uint8Array>({
    async start(controller) {
      try {
        if (kind === "chat") {
          controller.enqueue(
            frame(chunk(id, created, { role: "assistant", content: null }, null, kind)),
          );
        }
        for (let i = 0; i < tokens; i++) {
          controller.enqueue(frame(chunk(id, created, { content: content(i) }, null, kind)));
          if (i === 0 && hold) await held();
          else await new Promise((r) => setTimeout(r, interval));
          if (finished) return;
        }
        // Like llama-server: the last chunk carries timings, with or without include_usage.
        const timings = { cache_n: cached, prompt_n: prompt.length - cached, predicted_n: tokens };
        controller.enqueue(frame({ ...chunk(id, created, {}, "length", kind), timings }));
        if (includeUsage) {
          controller.enqueue(frame({ ...chunk(id, created, {}, null, kind), choices: [], usage }));
        }
        controller.enqueue(encoder.encode("data: [DONE]\n\n"));
        controller.close();
        end(true);
      } catch {
        end(false);
      }
    },
    cancel() {
      end(false);
    },
  });
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream",
      "x-accel-buffering": "no",
      server: "llama.cpp",
    },
  });
}

/**
 * Requests to end when their client leaves, by the port of the relay's connection they came
 * on (see `relay`).
 */
const leaving = new Map<number, Set<() => void>>();

/** Copies `from` to `to` until `from` ends or either side breaks. */
async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(65536);
  try {
    for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
      for (let at = 0; at < n;) at += await to.write(buf.subarray(at, n));
    }
  } catch {
    // either side closed
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/**
 * One client connection, relayed byte for byte to the Deno.serve below. Deno.serve's own
 * request signal misses a client's close when the request's body arrived in a later read than
 * its head (docs/client_disconnects.md): its first read takes 512 bytes, so any request whose
 * head ends before byte 512 and whose body crosses it. llama-server notices those; the relay
 * always reads the client, so it does too, and ends the requests that came through it.
 */
async function relay(client: Deno.TcpConn, innerPort: number): Promise<void> {
  let inner: Deno.TcpConn;
  try {
    inner = await Deno.connect({ hostname: "127.0.0.1", port: innerPort });
  } catch {
    return closeQuietly(client);
  }
  client.setNoDelay(true);
  inner.setNoDelay(true);
  const key = inner.localAddr.port;
  const gone = new Set<() => void>();
  leaving.set(key, gone);
  const answers = copy(inner, client).finally(() => closeQuietly(client));
  await copy(client, inner);
  for (const leave of gone) leave();
  leaving.delete(key);
  closeQuietly(inner);
  closeQuietly(client);
  await answers;
}

const listening = () =>
  console.log(`main: HTTP server is listening, hostname: 0.0.0.0, port: ${port}`);
const server = Deno.serve({
  hostname: watch ? "127.0.0.1" : "0.0.0.0",
  port: watch ? 0 : port,
  onListen: watch ? () => {} : listening,
}, async (req, info) => {
  const url = new URL(req.url);
  if (url.pathname === "/_fake/state") {
    return json(200, {
      alias,
      inflight,
      max_inflight: maxInflight,
      disconnects,
      completed,
      received,
    });
  }
  if (url.pathname === "/_fake/release") {
    const waiting = releaseHeld;
    releaseHeld = [];
    for (const release of waiting) release();
    return json(200, { released: waiting.length });
  }
  const text = req.method === "POST" ? await req.text() : "";
  if (record) {
    received.push({
      method: req.method,
      path: url.pathname + url.search,
      body: text,
      headers: Object.fromEntries(req.headers),
    });
  }
  if (!loaded()) return json(503, errorBody(503, "Loading model", "unavailable_error"));
  if (!loggedReady) {
    loggedReady = true;
    console.log("main: model loaded");
  }
  if (url.pathname === "/health" || url.pathname === "/v1/health") {
    return json(200, { status: "ok" });
  }
  if (url.pathname === "/slots" && req.method === "GET") {
    return json(
      200,
      slotCache.map((slot, id) => ({
        id,
        n_ctx: 4096,
        is_processing: slot.busy,
        ...(slot.tokens.length > 0 ? { id_task: 0, n_prompt_tokens: slot.tokens.length } : {}),
      })),
    );
  }
  const slotPath = url.pathname.match(/^\/slots\/(\d+)$/);
  if (slotPath && req.method === "POST") {
    return slotAction(Number(slotPath[1]), url.searchParams.get("action"), text);
  }
  if (req.method !== "POST") return json(404, errorBody(404, "File Not Found", "not_found_error"));
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch (err) {
    return json(500, errorBody(500, `[json.exception.parse_error.101] ${err}`, "server_error"));
  }
  // A backend that dies before answering: always, or only the first time (the marker file
  // survives a container restart, so the retried request is answered).
  if (body.fake_crash === true || (body.fake_crash_once === true && !crashedBefore())) {
    Deno.writeTextFileSync("/tmp/crashed", "1");
    console.error("GGML_ASSERT failed: fake crash before the first byte");
    Deno.exit(134);
  }
  switch (url.pathname) {
    case "/v1/chat/completions":
    case "/chat/completions":
      return generate(req, body, "chat", leaving.get(info.remoteAddr.port));
    case "/v1/completions":
    case "/completions":
      return generate(req, body, "text", leaving.get(info.remoteAddr.port));
    case "/v1/embeddings":
      return json(200, {
        model: alias,
        object: "list",
        usage: { prompt_tokens: 2, total_tokens: 2 },
        data: [{ embedding: [0.1, -0.2, 0.3], index: 0, object: "embedding" }],
      });
    default:
      return json(200, { object: "fake.echo", path: url.pathname, model: alias });
  }
});

if (watch) {
  const front = Deno.listen({ hostname: "0.0.0.0", port });
  listening();
  for await (const client of front) relay(client, server.addr.port);
}
