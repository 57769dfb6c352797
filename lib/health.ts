/**
 * @module
 * Polls a model's health URL until it is ready. llama-server answers 503 while loading and
 * refuses connections while starting: both mean "not yet". Every attempt has its own short
 * timeout, because Docker's port proxy can accept a connection and never answer it.
 */
import { messageOf } from "./errors.ts";

export interface PollOptions {
  /** Give up at this time (ms since epoch). */
  deadline: number;
  signal?: AbortSignal;
  /** Runs between attempts at most every CHECK_EVERY_MS; throwing ends the poll (container died). */
  check?: () => Promise<void>;
}

/** How often `check` runs, and how long one attempt may take at first. */
const CHECK_EVERY_MS = 250;
const ATTEMPT_TIMEOUT_MS = 250;

export type PollResult = { ready: true } | { ready: false; lastAnswer: string };

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Ready means HTTP 200, and, when the body is llama-server's JSON, `status` is "ok". */
export function isReadyAnswer(status: number, body: string): boolean {
  if (status !== 200) return false;
  try {
    const parsed = JSON.parse(body);
    if (parsed && typeof parsed === "object" && "status" in parsed) return parsed.status === "ok";
  } catch {
    // Not JSON: a plain 200 from a non-llama backend is good enough.
  }
  return true;
}

/**
 * One health request: whether `url` answers ready, and what it answered.
 * @throws when nothing answers (connection refused, or `signal` aborted).
 */
export async function probe(
  url: string,
  signal: AbortSignal,
): Promise<{ ready: boolean; text: string }> {
  const res = await fetch(url, { signal });
  const body = await res.text();
  return {
    ready: isReadyAnswer(res.status, body),
    text: `HTTP ${res.status} ${body.slice(0, 200)}`,
  };
}

/**
 * The gap before the next attempt: a fiftieth of the time polled so far, within the bounds.
 * A load of under a second is then seen within ~5-15 ms of its end (what a swap costs beyond
 * Docker and the model: the budget is 20 ms), and a load of minutes costs one attempt
 * every 200 ms: the added wait stays near 2% of the load however long. An attempt on a local
 * port that refuses costs well under a millisecond of CPU.
 */
export function pollIntervalMs(elapsedMs: number, minMs = 5, maxMs = 200): number {
  return Math.min(maxMs, Math.max(minMs, Math.round(elapsedMs / 50)));
}

/**
 * Polls `url` until it is ready or the deadline passes.
 * @throws whatever `check` throws, or the signal's reason when aborted.
 */
export async function pollUntilHealthy(url: string, options: PollOptions): Promise<PollResult> {
  const { signal, check } = options;
  const began = Date.now();
  let attemptTimeoutMs = ATTEMPT_TIMEOUT_MS;
  // What the server last said (or how its connection failed), and whether every attempt since
  // hung for its whole timeout: the error a client gets names both.
  let answered: string | null = null;
  let hung = false;
  let lastCheck = Date.now();

  while (Date.now() < options.deadline) {
    signal?.throwIfAborted();
    const remaining = options.deadline - Date.now();
    // An attempt the deadline cuts short tells nothing about the server: a slow 503 cut at the
    // deadline must not hide the "Loading model" it would have said.
    const cutByDeadline = remaining < attemptTimeoutMs;
    const attemptSignal = AbortSignal.timeout(Math.max(1, Math.min(attemptTimeoutMs, remaining)));
    try {
      const answer = await probe(
        url,
        signal ? AbortSignal.any([signal, attemptSignal]) : attemptSignal,
      );
      if (answer.ready) return { ready: true };
      answered = answer.text;
      hung = false;
      attemptTimeoutMs = ATTEMPT_TIMEOUT_MS;
    } catch (err) {
      signal?.throwIfAborted();
      if (!attemptSignal.aborted) {
        answered = failureOf(err);
        hung = false;
        attemptTimeoutMs = ATTEMPT_TIMEOUT_MS;
      } else if (!cutByDeadline) {
        // A hung attempt: give the next one more time, up to 2 s.
        attemptTimeoutMs = Math.min(attemptTimeoutMs * 2, 2000);
        hung = true;
      }
    }
    if (check && Date.now() - lastCheck >= CHECK_EVERY_MS) {
      lastCheck = Date.now();
      await check();
    }
    // Polling a local port is cheap; a coarse interval is pure added swap time.
    const interval = pollIntervalMs(Date.now() - began);
    await delay(Math.min(interval, Math.max(0, options.deadline - Date.now())), signal);
  }
  return { ready: false, lastAnswer: lastAnswerOf(answered, hung) };
}

/**
 * Why a health request failed, in words an operator acts on. Deno's fetch says only "fetch
 * failed"; its cause ends in the OS's reason ("… tcp connect error: Connection refused (os
 * error 111)"), which is kept alone; any other cause (a DNS failure) is kept whole.
 */
function failureOf(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : "";
  if (cause === "") return messageOf(err);
  return /([^:]+\(os error \d+\))$/.exec(cause)?.[1].trim() ?? cause;
}

function lastAnswerOf(answered: string | null, hung: boolean): string {
  if (!hung) return answered ?? "no answer yet";
  const hang = "no answer within the attempt timeout";
  return answered === null ? hang : `${hang} (before that: ${answered})`;
}
