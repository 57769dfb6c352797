/**
 * @module
 * The hop header of a request one node forwards to another: who forwarded it, to which node,
 * for which API caller, when, signed with the secret every node shares (HMAC-SHA256 over those
 * fields, the request's method and path, and a digest of its body). A peer serves a request
 * that carries a valid one without asking for an API key (the first node checked it) and never
 * forwards it again; a hop header that does not verify (forged by a client, a node with another
 * secret, meant for another node or another request) is refused, and so is one seen before: each
 * carries a random nonce, and a node remembers the nonces of the hops it took for as long as
 * their time lets them verify, so a captured header cannot be replayed.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import type { Caller } from "../auth.ts";
import { PRIORITIES, type Priority } from "../priority.ts";

export const HOP_HEADER = "x-lqp-hop";

/** How far a hop's time may be from ours: clocks of two hosts, and a slow body. */
const MAX_SKEW_MS = 60_000;
const VERSION = "v3";
/** version, from, to, time, nonce, caller name, caller priority, signature. */
const PARTS = 8;

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
  /** Nonces of the hops taken (`from|nonce`), until their time stops them verifying anyway. */
  readonly #seen = new Map<string, number>();

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
      randomBytes(12).toString("hex"),
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
    if (parts.length !== PARTS || parts[0] !== VERSION) return false;
    const [to, at] = [parts[2], parts[3]].map(decodeURIComponentOrEmpty);
    return to === self && Math.abs(now - Number(at)) <= MAX_SKEW_MS;
  }

  /**
   * The hop a header vouches for, or null when it is malformed, stale, meant for another node
   * than `self`, not signed with our secret for this very request, or taken before (a replay).
   */
  verify(header: string, request: HopRequest, self: string, now: number): Hop | null {
    const parts = header.split(";");
    const signature = parts[PARTS - 1];
    if (!this.plausible(header, self, now) || !/^[0-9a-f]{64}$/.test(signature)) return null;
    const fields = parts.slice(0, PARTS - 1);
    const expected = Buffer.from(this.#mac(fields, request), "hex");
    if (!timingSafeEqual(expected, Buffer.from(signature, "hex"))) return null;
    const [, from, to, at, nonce, name, priority] = fields.map(decodeURIComponentOrEmpty);
    let caller: Caller | null = null;
    if (name !== "") {
      if (!PRIORITIES.includes(priority as Priority)) return null;
      caller = { name, priority: priority as Priority };
    }
    if (!this.#firstTime(`${from}|${nonce}`, Number(at) + MAX_SKEW_MS, now)) return null;
    return { from, to, caller };
  }

  /** Records a hop's nonce; false when it was taken before. Forgets the ones past `until`. */
  #firstTime(key: string, until: number, now: number): boolean {
    // Insertion order is close to time order: forget from the oldest until one is still live.
    for (const [seen, expires] of this.#seen) {
      if (expires >= now) break;
      this.#seen.delete(seen);
    }
    if (this.#seen.has(key)) return false;
    this.#seen.set(key, until);
    return true;
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
