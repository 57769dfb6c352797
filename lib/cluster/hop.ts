/**
 * @module
 * The hop header of a request one node forwards to another: who forwarded it, for which API
 * caller, when, signed with the secret every node shares (HMAC-SHA256 over those fields and the
 * request's method and path). A peer serves a request that carries a valid one without asking
 * for an API key (the first node checked it) and never forwards it again; a hop header that
 * does not verify (forged by a client, or a node with another secret) is refused.
 */
import type { Caller } from "../auth.ts";
import { PRIORITIES, type Priority } from "../priority.ts";

export const HOP_HEADER = "x-lqp-hop";

/** How far a hop's time may be from ours: clocks of two hosts, and a slow body. */
const MAX_SKEW_MS = 60_000;
const VERSION = "v1";

/** Where a forwarded request comes from. */
export interface Hop {
  /** The forwarding node. */
  from: string;
  /** The API caller the first node identified, or null without keys. */
  caller: Caller | null;
}

export class HopSigner {
  readonly #key: CryptoKey;

  private constructor(key: CryptoKey) {
    this.#key = key;
  }

  static async create(secret: string): Promise<HopSigner> {
    const key = await crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
    return new HopSigner(key);
  }

  /** The header value for a request forwarded now. */
  async sign(hop: Hop, method: string, path: string, now: number): Promise<string> {
    const fields = [
      VERSION,
      hop.from,
      String(now),
      hop.caller?.name ?? "",
      hop.caller?.priority ?? "",
    ].map(encodeURIComponent);
    const mac = await crypto.subtle.sign("HMAC", this.#key, signed(fields, method, path));
    return [...fields, toHex(new Uint8Array(mac))].join(";");
  }

  /** The hop a header vouches for, or null when it is malformed, stale or not ours. */
  async verify(header: string, method: string, path: string, now: number): Promise<Hop | null> {
    const parts = header.split(";");
    if (parts.length !== 6 || parts[0] !== VERSION) return null;
    const fields = parts.slice(0, 5);
    const mac = fromHex(parts[5]);
    if (mac === null) return null;
    const ok = await crypto.subtle.verify("HMAC", this.#key, mac, signed(fields, method, path));
    if (!ok) return null;
    const [, from, at, name, priority] = fields.map(decodeURIComponent);
    if (!(Math.abs(now - Number(at)) <= MAX_SKEW_MS)) return null;
    if (name === "") return { from, caller: null };
    if (!PRIORITIES.includes(priority as Priority)) return null;
    return { from, caller: { name, priority: priority as Priority } };
  }
}

function signed(fields: readonly string[], method: string, path: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode([...fields, method, path].join("|"));
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[0-9a-f]{64}$/.test(text)) return null;
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}
