/**
 * @module
 * The only way tests wait: poll a condition until it holds or a deadline passes. The deadline
 * is a hang guard, never a performance claim.
 */
import { AssertionError } from "node:assert";

/**
 * Polls `probe` until it returns a value (not undefined, null or false). A probe may throw
 * while what it reads is not up yet (a refused connection): that is retried. An assertion
 * that fails inside a probe fails the test at once: it states what must never happen while
 * waiting. A probe that never answers (a request that hangs) fails at the deadline too.
 */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  { timeoutMs = 20_000, intervalMs = 20 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await within(
        `a probe of ${what} to answer`,
        Promise.resolve(probe()),
        Math.max(0, deadline - Date.now()),
      );
      if (value !== undefined && value !== null && value !== false) return value;
    } catch (err) {
      if (err instanceof AssertionError) throw err;
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(
    `Timed out after ${timeoutMs} ms waiting for ${what}${
      lastError ? ` (last error: ${lastError})` : ""
    }`,
  );
}

/** Waits for `promise`, or fails after `timeoutMs` saying what did not happen (a hang guard). */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs = 20_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
