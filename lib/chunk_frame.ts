/**
 * @module
 * The HTTP/1.1 chunk frames of the answers the proxy streams (RFC 9112 §7.1): a chunk's size in
 * hex, CRLF, its bytes, CRLF, in one buffer for one write. A backend's chunk is copied once,
 * with room for its frame, and framed in place.
 */

const CR = 13;
const LF = 10;

/** Room before a chunk's bytes for its size line (8 hex digits, and CRLF). */
const FRAME_HEAD_ROOM = 10;
/** Room after a chunk's bytes for the CRLF that ends it. */
const FRAME_TAIL_ROOM = 2;
/**
 * What copyForFraming makes: chunkFrame may write the room around such bytes in their buffer.
 * A class to tell them apart, not a WeakSet of their buffers: a WeakSet's add and lookup cost
 * a quarter of the allocation they save.
 */
class FramingRoomBytes extends Uint8Array<ArrayBuffer> {}

/**
 * `parts` copied into one new array that keeps room for a chunk frame around it. A backend's
 * chunk is copied out of the read buffer the next read reuses; with the room, the server frames
 * that copy for the client in place instead of copying it again into a frame of its own. With
 * 1,000 streams, each chunk's backing store was two allocations and two copies. Readers see
 * the bytes only (the room is outside the view), in a Uint8Array subclass whose subarray and
 * slice are of that class too.
 */
export function copyForFraming(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let total = 0;
  for (const part of parts) total += part.byteLength;
  const buffer = new ArrayBuffer(FRAME_HEAD_ROOM + total + FRAME_TAIL_ROOM);
  const out = new FramingRoomBytes(buffer, FRAME_HEAD_ROOM, total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/**
 * A chunk of a chunked body: its size in hex, CRLF, the bytes, CRLF, in one buffer for one
 * write. Written around `chunk` in place when copyForFraming made it (and it is all of that
 * copy); any other bytes are copied into a new frame.
 */
export function chunkFrame(chunk: Uint8Array): Uint8Array {
  const size = chunk.byteLength.toString(16);
  const length = size.length + chunk.byteLength + 4;
  // All of the copy: a part of it (a subarray is one too) has bytes of the copy around it. A
  // size past 8 hex digits (4 GiB) would not fit the room.
  const inPlace = chunk instanceof FramingRoomBytes && chunk.byteOffset === FRAME_HEAD_ROOM &&
    chunk.buffer.byteLength === FRAME_HEAD_ROOM + chunk.byteLength + FRAME_TAIL_ROOM &&
    size.length + 2 <= FRAME_HEAD_ROOM;
  const out = inPlace
    ? new Uint8Array(chunk.buffer, FRAME_HEAD_ROOM - size.length - 2, length)
    : new Uint8Array(length);
  for (let i = 0; i < size.length; i++) out[i] = size.charCodeAt(i);
  out[size.length] = CR;
  out[size.length + 1] = LF;
  if (!inPlace) out.set(chunk, size.length + 2);
  out[length - 2] = CR;
  out[length - 1] = LF;
  return out;
}
