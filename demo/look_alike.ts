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
 * `"fake_crash": true` kills the server before it answers; `"fake_crash_once": true` only
 * the first time.
 */

const env = (name: string, fallback: string) => Deno.env.get(name) ?? fallback;
const alias = env("FAKE_ALIAS", "fake");
const loadMs = Number(env("FAKE_LOAD_MS", "150"));
const mode = env("FAKE_MODE", "normal");
const slots = Number(env("FAKE_SLOTS", "2"));
const tokenMs = Number(env("FAKE_TOKEN_MS", "2"));
const port = Number(env("FAKE_PORT", "8080"));
const record = env("FAKE_RECORD", "1") !== "0";

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

async function generate(req: Request, body: Record<string, unknown>, kind: "chat" | "text") {
  const tokens = Number(body.fake_tokens ?? body.max_tokens ?? 4);
  const interval = Number(body.fake_token_ms ?? tokenMs);
  const stamp = body.fake_stamp === true;
  const content = (i: number) =>
    stamp ? String(performance.timeOrigin + performance.now()) : words[i % words.length];
  const hold = body.fake_hold === true;
  const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
  const created = Math.floor(Date.now() / 1000);
  const usage = { completion_tokens: tokens, prompt_tokens: 9, total_tokens: tokens + 9 };
  inflight++;
  maxInflight = Math.max(maxInflight, inflight);
  let finished = false;
  const end = (ok: boolean) => {
    if (finished) return;
    finished = true;
    inflight--;
    freeSlot();
    if (ok) completed++;
    else disconnects++;
  };
  req.signal.addEventListener("abort", () => end(false), { once: true });
  await takeSlot();

  if (body.stream !== true) {
    if (hold) await held();
    if (interval * tokens > 0) await new Promise((r) => setTimeout(r, interval * tokens));
    const text = Array.from({ length: tokens }, (_, i) => words[i % words.length]).join("");
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
        const timings = { cache_n: 0, prompt_n: usage.prompt_tokens, predicted_n: tokens };
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

Deno.serve({
  hostname: "0.0.0.0",
  port,
  onListen: () => console.log(`main: HTTP server is listening, hostname: 0.0.0.0, port: ${port}`),
}, async (req) => {
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
      return generate(req, body, "chat");
    case "/v1/completions":
    case "/completions":
      return generate(req, body, "text");
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
