/**
 * @module
 * The hop header of a request one node forwards to another: who forwarded it, to which node,
 * for which API caller, when, signed with the secret every node shares (HMAC-SHA256 over those
 * fields, the request's method and path, and a digest of its body). A peer serves a request
 * that carries a valid one without asking for an API key (the first node checked it) and never
 * forwards it again; a hop header that does not verify (forged by a client, a node with another
 * secret, meant for another node or another request) is refused.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import type { Caller } from "../auth.ts";
import { PRIORITIES, type Priority } from "../priority.ts";

export const HOP_HEADER = "x-lqp-hop";

/** How far a hop's time may be from ours: clocks of two hosts, and a slow body. */
const MAX_SKEW_MS = 60_000;
const VERSION = "v2";

/** Where a forwarded request comes from. */
export interface Hop {
  /** The forwarding node. */
  from: string;
  /** The node it is meant for. */
  to: string;
  /** The API caller the first node identified, or null without keys. */
  caller: Caller | null;
}

export class HopSigner {
  readonly #secret: string;

  private constructor(secret: string) {
    this.#secret = secret;
  }

  /** node:crypto's HMAC is synchronous: for a header per request, cheaper than WebCrypto's. */
  static create(secret: string): HopSigner {
    return new HopSigner(secret);
  }

  #mac(fields: readonly string[], request: HopRequest): string {
    const digest = createHash("sha256").update(request.body).digest("hex");
    return createHmac("sha256", this.#secret)
      .update([...fields, request.method, request.path, digest].join("|"))
      .digest("hex");
  }

  /** The header value for `request`, forwarded now. */
  sign(hop: Hop, request: HopRequest, now: number): string {
    const fields = [
      VERSION,
      hop.from,
      hop.to,
      String(now),
      hop.caller?.name ?? "",
      hop.caller?.priority ?? "",
    ].map(encodeURIComponent);
    return [...fields, this.#mac(fields, request)].join(";");
  }

  /**
   * Whether a header can be a hop to `self` at all (its form, target and time), before the
   * body it is bound to is read: junk is refused without reading a body for it.
   */
  plausible(header: string, self: string, now: number): boolean {
    const parts = header.split(";");
    if (parts.length !== 7 || parts[0] !== VERSION) return false;
    const [to, at] = [parts[2], parts[3]].map(decodeURIComponentOrEmpty);
    return to === self && Math.abs(now - Number(at)) <= MAX_SKEW_MS;
  }

  /**
   * The hop a header vouches for, or null when it is malformed, stale, meant for another node
   * than `self`, or not signed with our secret for this very request.
   */
  verify(header: string, request: HopRequest, self: string, now: number): Hop | null {
    const parts = header.split(";");
    if (!this.plausible(header, self, now) || !/^[0-9a-f]{64}$/.test(parts[6])) return null;
    const fields = parts.slice(0, 6);
    const expected = Buffer.from(this.#mac(fields, request), "hex");
    if (!timingSafeEqual(expected, Buffer.from(parts[6], "hex"))) return null;
    const [, from, to, , name, priority] = fields.map(decodeURIComponentOrEmpty);
    if (name === "") return { from, to, caller: null };
    if (!PRIORITIES.includes(priority as Priority)) return null;
    return { from, to, caller: { name, priority: priority as Priority } };
  }
}

/** What of a request a hop header is bound to. */
export interface HopRequest {
  method: string;
  /** Path and query. */
  path: string;
  body: Uint8Array<ArrayBuffer>;
}

function decodeURIComponentOrEmpty(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return "";
  }
}
