/**
 * @module
 * The client of the bench's many-streams part: many SSE streams, opened at once or spread over
 * `spreadMs`, each a raw socket with one HTTP/1.1 POST, in a `deno run` process of their own.
 *
 * With 1,000 `fetch` streams in the bench's own process (each through a TextDecoderStream,
 * a string split and a regex per chunk, sharing an event loop with the bench's bookkeeping),
 * the client was most of what the part measured on a 2-core machine: straight to the backend
 * its chunks came ~50 ms late at p50 and ~180 ms at p99. Here a chunk costs one socket read
 * into the stream's own buffer and a byte scan that finds the stamp, with no text decoding,
 * no string and no promise per chunk beyond the read; and the process has nothing else to do.
 *
 * A stamp is the backend's `performance.timeOrigin + performance.now()` when it sent the chunk;
 * its delay is the same expression here when the read that brought it returned. Both origins
 * are this machine's wall clock at each process's start (the backend's container shares the
 * host's clock), so the two compare.
 */
import process from "node:process";
import { concatBytes } from "../lib/bytes.ts";

export interface StreamClientsOptions {
  /** The server, e.g. `http://127.0.0.1:8080`. */
  url: string;
  clients: number;
  /** Content chunks each stream must bring. */
  tokens: number;
  tokenMs: number;
  model: string;
  /** Client i connects at i * spreadMs / clients ms; 0 opens every stream at once. */
  spreadMs?: number;
}

export interface StreamClientsResult {
  /** Streams that brought every content chunk, `data: [DONE]` and the end of the body. */
  complete: number;
  /** The delay of every content chunk of the complete streams, ms. */
  delays: number[];
  /**
   * The delays of the chunks sent while every complete stream was open: after the last one's
   * first chunk, before the first one's last. Without the arrivals (each a connection, a head
   * and a body to read, a queue and a backend request) that the delays above include.
   */
  heldOpenDelays: number[];
  /** Why the first incomplete stream was, for a reader; "" when all were complete. */
  firstError: string;
  /** CPU time of the client process over the streams (user + system), ms. */
  clientCpuMs: number;
}

/** Runs the clients in a process of their own and returns what they saw. */
export async function streamClients(opts: StreamClientsOptions): Promise<StreamClientsResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", new URL(import.meta.url).pathname, JSON.stringify(opts)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`stream clients failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

function cpuMsSince(before: NodeJS.CpuUsage): number {
  const { user, system } = process.cpuUsage(before);
  return (user + system) / 1000;
}

const encoder = new TextEncoder();
const STAMP = encoder.encode('"content":"');
const DONE = encoder.encode("data: [DONE]");
const HEAD_END = encoder.encode("\r\n\r\n");
const QUOTE = 0x22, DOT = 0x2e, ZERO = 0x30, NINE = 0x39, CR = 0x0d, LF = 0x0a;

/**
 * Finds the stamps and `data: [DONE]` in the body's bytes as they come, across reads. Every
 * pattern's only repeated byte is its first (`"` and `d`), so on a mismatch the match restarts
 * at 1 if the byte is that first byte and at 0 otherwise.
 */
class SseScanner {
  readonly delays: number[] = [];
  /** The backend's stamp of each delay's chunk. */
  readonly stamps: number[] = [];
  done = false;
  #stampAt = 0;
  #doneAt = 0;
  #inNumber = false;
  #value = 0;
  /** 0 in the integer part; then the divisor of the next fraction digit. */
  #scale = 0;

  feed(buf: Uint8Array, start: number, end: number, now: number): void {
    for (let i = start; i < end; i++) {
      const b = buf[i];
      if (this.#inNumber) {
        if (b >= ZERO && b <= NINE) {
          if (this.#scale === 0) this.#value = this.#value * 10 + (b - ZERO);
          else this.#value += (b - ZERO) / (this.#scale *= 10);
          continue;
        }
        if (b === DOT && this.#scale === 0) {
          this.#scale = 1;
          continue;
        }
        this.#inNumber = false;
        // Content that is not a number is not a stamp: not counted, so the stream is short.
        if (b === QUOTE) {
          this.delays.push(now - this.#value);
          this.stamps.push(this.#value);
        }
      }
      if (b === STAMP[this.#stampAt]) {
        if (++this.#stampAt === STAMP.length) {
          this.#stampAt = 0;
          this.#inNumber = true;
          this.#value = 0;
          this.#scale = 0;
        }
      } else this.#stampAt = b === STAMP[0] ? 1 : 0;
      if (b === DONE[this.#doneAt]) {
        if (++this.#doneAt === DONE.length) {
          this.#doneAt = 0;
          this.done = true;
        }
      } else this.#doneAt = b === DONE[0] ? 1 : 0;
    }
  }
}

/** Where the chunked decoder is: in a size line, its extension, its LF, the data, its CRLF. */
const Chunked = { Size: 0, Extension: 1, SizeLf: 2, Data: 3, DataCr: 4, DataLf: 5 } as const;

/** One stream: POST, then read until the body ends. Throws when it is not whole. */
async function oneStream(
  hostname: string,
  port: number,
  request: Uint8Array,
  tokens: number,
): Promise<SseScanner> {
  const conn = await Deno.connect({ hostname, port });
  try {
    for (let written = 0; written < request.length;) {
      written += await conn.write(request.subarray(written));
    }
    const buf = new Uint8Array(16 * 1024);
    const sse = new SseScanner();
    const head: Uint8Array[] = [];
    let headAt = 0;
    let inBody = false;
    let chunked = false;
    let state: number = Chunked.Size;
    let size = 0;
    let ended = false;
    while (!ended) {
      const n = await conn.read(buf);
      const now = performance.timeOrigin + performance.now();
      if (n === null) {
        // Without chunked framing the body ends with the connection; with it, this is a cut.
        if (inBody && !chunked) ended = true;
        break;
      }
      let i = 0;
      if (!inBody) {
        while (i < n && headAt < HEAD_END.length) {
          const b = buf[i++];
          headAt = b === HEAD_END[headAt] ? headAt + 1 : b === CR ? 1 : 0;
        }
        head.push(buf.slice(0, i));
        if (headAt < HEAD_END.length) continue;
        inBody = true;
        const text = new TextDecoder().decode(concatBytes(head)).toLowerCase();
        if (!text.startsWith("http/1.1 200")) throw new Error(text.split("\r\n")[0]);
        chunked = /\r\ntransfer-encoding:\s*chunked/.test(text);
      }
      if (!chunked) {
        sse.feed(buf, i, n, now);
        continue;
      }
      while (i < n && !ended) {
        const b = buf[i];
        switch (state) {
          case Chunked.Size: {
            const digit = b <= NINE ? b - ZERO : (b | 0x20) - 0x57; // 0-9, a-f, A-F
            if (b === CR) state = Chunked.SizeLf;
            else if (b === 0x3b) state = Chunked.Extension; // ';'
            else if (digit >= 0 && digit < 16) size = size * 16 + digit;
            else throw new Error(`bad chunk size byte ${b}`);
            i++;
            break;
          }
          case Chunked.Extension:
            if (b === CR) state = Chunked.SizeLf;
            i++;
            break;
          case Chunked.SizeLf:
            if (b !== LF) throw new Error("bad chunk size line");
            i++;
            // The last chunk: the body is whole, whatever trailers would follow.
            if (size === 0) ended = true;
            else state = Chunked.Data;
            break;
          case Chunked.Data: {
            const take = Math.min(size, n - i);
            sse.feed(buf, i, i + take, now);
            i += take;
            size -= take;
            if (size === 0) state = Chunked.DataCr;
            break;
          }
          case Chunked.DataCr:
          case Chunked.DataLf:
            if (b !== (state === Chunked.DataCr ? CR : LF)) throw new Error("bad chunk end");
            state = state === Chunked.DataCr ? Chunked.DataLf : Chunked.Size;
            i++;
            break;
        }
      }
    }
    if (!ended) throw new Error(`cut after ${sse.delays.length} of ${tokens} chunks`);
    if (sse.delays.length !== tokens) {
      throw new Error(`${sse.delays.length} content chunks, not ${tokens}`);
    }
    if (!sse.done) throw new Error("no data: [DONE]");
    return sse;
  } finally {
    conn.close();
  }
}

/**
 * The delays of the chunks stamped while every one of `streams` was open; none when they never
 * were all open together (streams shorter than the spread of their arrivals).
 */
function heldOpen(streams: SseScanner[]): number[] {
  let from = -Infinity, to = Infinity;
  for (const { stamps } of streams) {
    from = Math.max(from, stamps[0]);
    to = Math.min(to, stamps[stamps.length - 1]);
  }
  return streams.flatMap(({ delays, stamps }) =>
    delays.filter((_, i) => stamps[i] >= from && stamps[i] <= to)
  );
}

/** Every client, at once or spread over `spreadMs`, in this process. */
export async function runClients(opts: StreamClientsOptions): Promise<StreamClientsResult> {
  const { hostname, port } = new URL(opts.url);
  const body = encoder.encode(JSON.stringify({
    model: opts.model,
    messages: [{ role: "user", content: "hi" }],
    stream: true,
    fake_stamp: true,
    fake_tokens: opts.tokens,
    fake_token_ms: opts.tokenMs,
  }));
  const request = concatBytes([
    encoder.encode(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: ${hostname}:${port}\r\n` +
        `content-type: application/json\r\ncontent-length: ${body.length}\r\n` +
        "connection: close\r\n\r\n",
    ),
    body,
  ]);
  const cpuBefore = process.cpuUsage();
  let firstError = "";
  const results = await Promise.all(
    Array.from(
      { length: opts.clients },
      (_, i) =>
        new Promise((r) => setTimeout(r, i * (opts.spreadMs ?? 0) / opts.clients)).then(() =>
          oneStream(hostname, Number(port), request, opts.tokens)
        ).catch((e: unknown) => {
          firstError ||= e instanceof Error ? e.message : String(e);
          return null;
        }),
    ),
  );
  const whole = results.filter((r) => r !== null);
  return {
    complete: whole.length,
    delays: whole.flatMap((sse) => sse.delays),
    heldOpenDelays: heldOpen(whole),
    firstError,
    clientCpuMs: Math.round(cpuMsSince(cpuBefore)),
  };
}

if (import.meta.main) {
  const result = await runClients(JSON.parse(Deno.args[0]));
  await Deno.stdout.write(encoder.encode(JSON.stringify(result)));
}
