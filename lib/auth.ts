/**
 * @module
 * Optional API keys. Keys are kept only as SHA-256 digests and compared in constant time
 * against every configured key, so neither timing nor a log line gives a key away.
 */
import type { Priority } from "./priority.ts";

export interface ApiKeyConfig {
  name: string;
  key: string;
  priority: Priority;
}

/** Who a request belongs to: the key's name (safe to log) and its priority class. */
export interface Caller {
  name: string;
  priority: Priority;
}

const encoder = new TextEncoder();

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

function equalDigests(a: Uint8Array, b: Uint8Array): boolean {
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** The token of `Authorization: Bearer <token>` (or `X-Api-Key`, as llama-server accepts). */
export function presentedKey(headers: Headers): string | null {
  const auth = headers.get("authorization");
  const bearer = auth ? /^Bearer\s+(\S+)\s*$/i.exec(auth)?.[1] : undefined;
  return bearer ?? headers.get("x-api-key");
}

/** The request's headers minus our credentials, which must not travel to a backend. */
export function withoutCredentials(headers: Headers): Headers {
  const out = new Headers(headers);
  out.delete("authorization");
  out.delete("x-api-key");
  return out;
}

export class KeyRing {
  readonly #keys: { digest: Uint8Array; caller: Caller }[];

  private constructor(keys: { digest: Uint8Array; caller: Caller }[]) {
    this.#keys = keys;
  }

  static async create(keys: readonly ApiKeyConfig[]): Promise<KeyRing> {
    return new KeyRing(
      await Promise.all(keys.map(async (k) => ({
        digest: await digest(k.key),
        caller: { name: k.name, priority: k.priority },
      }))),
    );
  }

  /** No keys configured: the proxy is open to whoever reaches the port. */
  get open(): boolean {
    return this.#keys.length === 0;
  }

  /** The caller a key belongs to, or null. Every configured key is compared, always. */
  async identify(key: string | null): Promise<Caller | null> {
    if (key === null) return null;
    const presented = await digest(key);
    let found: Caller | null = null;
    for (const entry of this.#keys) {
      if (equalDigests(entry.digest, presented)) found = entry.caller;
    }
    return found;
  }
}
