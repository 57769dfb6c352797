/**
 * @module
 * What every request passes on its way in and out, whichever way it is routed (Hono, or the
 * model route's direct path): who sends a /v1 request, and how an error becomes the answer.
 */
import { type Caller, presentedKey } from "../lib/auth.ts";
import {
  ApiError,
  invalidApiKey,
  invalidHop,
  storeUnavailable,
  toApiError,
} from "../lib/errors.ts";
import { HOP_HEADER } from "../lib/cluster/hop.ts";
import { StoreUnavailableError } from "../lib/store/contract.ts";
import type { AppDeps } from "./app.ts";

export interface Admission {
  /** A key's owner; null when no keys are configured, or for a peer's hop (checked later). */
  caller: Caller | null;
  /** A peer's hop header, not verified yet: the model route checks it with the body. */
  hop: string | null;
}

const OPEN: Admission = Object.freeze({ caller: null, hop: null });

/**
 * Who sends a /v1 request. With keys configured every /v1 route needs one; a model request a
 * peer forwarded carries a hop header instead (that node checked the key).
 * @throws {ApiError} 401 for a missing or wrong key, or a hop header where none can be.
 */
export async function admit(
  deps: Pick<AppDeps, "live" | "cluster">,
  headers: Headers,
  /** A model request: the only kind a peer forwards. */
  hopAllowed: boolean,
): Promise<Admission> {
  const hop = headers.get(HOP_HEADER);
  if (hop !== null) {
    if (!hopAllowed || !deps.cluster?.plausibleHop(hop)) throw invalidHop();
    return { caller: null, hop };
  }
  const keys = deps.live.keys;
  if (keys.open) return OPEN;
  const caller = await keys.identify(presentedKey(headers));
  if (caller === null) throw invalidApiKey();
  return { caller, hop: null };
}

/** The answer for an error a route threw; an unexpected one is logged with its stack. */
export function errorResponse(
  deps: Pick<AppDeps, "log">,
  err: unknown,
  request: { id: string; path: string },
): Response {
  if (err instanceof StoreUnavailableError) return storeUnavailable(err.message).toResponse();
  const apiError = toApiError(err, request.id);
  if (!(err instanceof ApiError)) {
    deps.log.error("unexpected_error", {
      id: request.id,
      path: request.path,
      error: err instanceof Error ? err.stack ?? err.message : String(err),
    });
  }
  return apiError.toResponse();
}
