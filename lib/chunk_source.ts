/**
 * @module
 * A response body read chunk by chunk with one call per chunk, not through a web stream: a
 * backend's event stream reaches the server this way (a StreamAnswer, lib/answer.ts), so each
 * chunk goes from its read straight to the socket write. `streamOf` and `readerSource` cross
 * to web streams and back where a Response is on the other side (a peer's stream).
 */
import { concatBytes } from "./bytes.ts";

export interface ChunkSource {
  /**
   * The next chunk, or null at the end. One call at a time.
   * @throws when the body broke; the response then ends abruptly.
   */
  read(): Promise<Uint8Array | null>;
  /** The reader leaves before the end (the client went away). */
  cancel(reason: unknown): Promise<void>;
}

/** Everything `source` still has, read to its end. */
export async function readAll(
  source: Pick<ChunkSource, "read">,
): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  for (let chunk = await source.read(); chunk !== null; chunk = await source.read()) {
    parts.push(chunk);
  }
  return concatBytes(parts);
}

/** `bytes` as one chunk. */
export function bytesSource(bytes: Uint8Array): ChunkSource {
  let left: Uint8Array | null = bytes;
  return {
    read() {
      const chunk = left;
      left = null;
      return Promise.resolve(chunk);
    },
    cancel() {
      left = null;
      return Promise.resolve();
    },
  };
}

/** A web stream as a source. */
export function readerSource(body: ReadableStream<Uint8Array>): ChunkSource {
  const reader = body.getReader();
  return {
    async read() {
      const chunk = await reader.read();
      return chunk.done ? null : chunk.value;
    },
    cancel: (reason) => reader.cancel(reason),
  };
}

/** A source as a web stream that reads only when asked (no buffer of its own). */
export function streamOf(source: ChunkSource): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = await source.read();
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      } catch (err) {
        controller.error(err);
      }
    },
    cancel: (reason) => source.cancel(reason),
  }, { highWaterMark: 0 });
}
