/**
 * @module
 * One way to make an `@upstash/redis` client (Upstash, or SRH in front of a plain Redis), for
 * the job store and the cluster's node board: raw strings back (replies are parsed and checked
 * by their readers), one HTTP request per call, no telemetry, and a deadline on every call.
 */
import { Redis } from "@upstash/redis";

export interface UpstashClientOptions {
  url: string;
  token: string;
  /** Each call gives up after this long (a gateway that accepts and never answers). */
  timeoutMs: number;
  /** Retries of a failed call: 0 for calls that are repeated anyway (heartbeats). */
  retries: number;
}

export function upstashClient(options: UpstashClientOptions): Redis {
  return new Redis({
    url: options.url,
    token: options.token,
    automaticDeserialization: false,
    // Predictable one-request-per-call behaviour; transitions are scripts anyway.
    enableAutoPipelining: false,
    enableTelemetry: false,
    readYourWrites: false,
    // Fail fast to a 503 instead of retrying for seconds while a client waits.
    retry: options.retries === 0 ? false : { retries: options.retries, backoff: () => 50 },
    signal: () => AbortSignal.timeout(options.timeoutMs),
  });
}
