/**
 * @module
 * The model requests: every `POST /v1/*` but files and batches, whose JSON body names a
 * configured model (chat, completions, embeddings, rerank, messages, …). Admitted, validated,
 * sent to a peer in a cluster or queued here, and answered as the relay says; never swapped
 * here. Served on the server's direct path: a web Request and Hono's routing for each were ~10%
 * of such a request's CPU.
 */
import { type Caller, withoutCredentials } from "../lib/auth.ts";
import { effectivePriority, parseRoutingFields, readBody, readPriority } from "../lib/body.ts";
import { findModel } from "../lib/config.ts";
import type { Config, ModelConfig } from "../lib/config_types.ts";
import {
  clientClosed,
  invalidHop,
  modelNotFound,
  peerFailed,
  peerUnreachable,
  requestTimeout,
  shuttingDown,
  unsupportedMediaType,
} from "../lib/errors.ts";
import { PeerFailedError, PeerUnreachableError } from "../lib/cluster/forward.ts";
import type { RemoteModel } from "../lib/cluster/cluster.ts";
import type { DirectRequest, DirectRoute } from "../lib/http_server.ts";
import { Job } from "../lib/jobs.ts";
import { respond } from "../lib/relay.ts";
import { ArrivalGate } from "../lib/arrival_gate.ts";
import { Deadlines } from "../lib/deadlines.ts";
import { type Answer, setHeader } from "../lib/answer.ts";
import { checkRequestBody } from "../lib/request_checks.ts";
import { newRequestId, REQUEST_ID } from "../lib/request_id.ts";
import type { AppDeps } from "./app.ts";
import { admit, errorResponse } from "./gate.ts";

/** How long past request_timeout a forward may take before this node gives up on the peer. */
const FORWARD_MARGIN_MS = 5000;

/** Routes of their own under /v1, for Hono. */
const NOT_MODELS = /^\/v1\/(files|batches)(\/|$)/;

/** The path as routes match it: escapes decoded (as Hono does), unless they do not decode. */
function routedPath(pathname: string): string {
  if (!pathname.includes("%")) return pathname;
  try {
    return decodeURI(pathname);
  } catch {
    return pathname;
  }
}

/** One model request on its way through: what the client sent and what was learnt of it. */
interface ModelRequest {
  readonly http: DirectRequest;
  /** Shown to the client; a request a peer forwarded takes its first node's. */
  id: string;
  /** Who sent it: a key's owner, or the caller a peer's hop vouches for. */
  caller: Caller | null;
  /** A peer's hop header, verified with the body. */
  hop: string | null;
}

function notFound(config: Config, name: string) {
  return modelNotFound(name, config.models.map((m) => m.id));
}

export function modelRoute(deps: AppDeps): DirectRoute {
  const { live, dispatcher, clock } = deps;
  // Every request's request_timeout, on one shared timer.
  const timeouts = new Deadlines();
  // A burst of arrivals comes in a few per turn, so running streams keep their pace.
  const arrivals = new ArrivalGate();

  /**
   * In a cluster: checks the hop header of a request a peer forwarded here (served here, never
   * forwarded again), or answers with the peer this request is routed to
   * (lib/cluster/router.ts). Null when it is served here: routed here, forwarded here, or every
   * peer it was routed to could not be reached and this node serves the model too.
   */
  async function toPeer(
    r: ModelRequest,
    config: Config,
    model: string,
    /** Set when only peers serve `model`. */
    remote: RemoteModel | null,
    request: { path: string; headers: Headers; body: Uint8Array<ArrayBuffer> },
  ): Promise<Answer | null> {
    const cluster = deps.cluster;
    if (cluster === null) return null;
    const req = r.http;
    const { path, body } = request;
    if (r.hop !== null) {
      const hop = cluster.verifyHop(r.hop, { method: "POST", path, body });
      if (hop === null) throw invalidHop();
      r.caller = hop.caller;
      const firstId = req.headers.get("x-request-id");
      if (firstId !== null && REQUEST_ID.test(firstId)) r.id = firstId;
      return null;
    }
    if (!dispatcher.accepting) throw shuttingDown();
    // Ends the forward when the client leaves, at a shutdown here, or past a timeout: the peer
    // ends a request at its own request_timeout, so this only guards against a peer that stops
    // answering altogether. One controller and plain callbacks, released when the answer is
    // through: AbortSignal.any and AbortSignal.timeout cost a WeakRef, a finalizer and a timer
    // left queued for request_timeout per request.
    const cut = new AbortController();
    const signal = cut.signal;
    let timedOut = false;
    // The closures below live as long as the forwarded answer streams: they keep the client's
    // signal and the id, not the request and its body.
    const clientSignal = req.signal;
    const id = r.id;
    const clientGone = () => cut.abort(clientSignal.reason);
    const closing = () => cut.abort(deps.closing.reason);
    const timer = setTimeout(() => {
      timedOut = true;
      cut.abort(new DOMException("Signal timed out.", "TimeoutError"));
    }, config.requestTimeoutMs + FORWARD_MARGIN_MS);
    const release = () => {
      clearTimeout(timer);
      deps.closing.removeEventListener("abort", closing);
    };
    signal.addEventListener("abort", release, { once: true });
    clientSignal.addEventListener("abort", clientGone, { once: true });
    deps.closing.addEventListener("abort", closing, { once: true });
    if (clientSignal.aborted) clientGone();
    else if (deps.closing.aborted) closing();
    for (;;) {
      const route = await cluster.routeOf(model);
      if (route.kind === "local") {
        release();
        if (remote !== null) throw peerUnreachable(remote.id, remote.nodes);
        return null;
      }
      const began = clock.now();
      const told = (status: number) =>
        deps.log.info("forward", {
          id,
          model,
          to: route.peer.node,
          status,
          // Until the peer's headers: its queue wait, and any load it had to do.
          ms: clock.now() - began,
        });
      try {
        const answer = await cluster.forward(route.peer, {
          ...request,
          id: r.id,
          method: "POST",
          signal,
          onEnd: release,
        }, r.caller);
        told(answer.status);
        return answer;
      } catch (err) {
        // Nothing reached that peer, and it is out of the routing now: decide again.
        if (err instanceof PeerUnreachableError) continue;
        release();
        const error = err instanceof PeerFailedError
          ? peerFailed(route.peer.node)
          : clientSignal.aborted
          ? clientClosed()
          : deps.closing.aborted
          ? shuttingDown()
          : timedOut
          ? requestTimeout(config.requestTimeoutMs / 1000)
          : null;
        if (error === null) throw err;
        told(error.status);
        throw error;
      }
    }
  }

  async function serve(r: ModelRequest): Promise<Answer> {
    // One config for the whole request, even if a reload lands while it is read.
    const config = live.current;
    const req = r.http;
    const contentType = req.headers.get("content-type") ?? "";
    if (/^multipart\//i.test(contentType)) throw unsupportedMediaType(contentType);
    // Counted from the first byte read until the request ends (max_queued_bytes).
    const hold = dispatcher.bodies.hold(r.caller?.name ?? null);
    let job: Job;
    let model: ModelConfig;
    let stopTimer: (() => void) | undefined;
    try {
      const body = await readBody(req, config.maxBodyBytes, hold);
      const fields = parseRoutingFields(body, config.maxJsonDepth);
      const local = findModel(config, fields.model);
      const remote = local === undefined ? deps.cluster?.remoteModel(fields.model) ?? null : null;
      // An unknown model is a 404 before anything about the body, as with OpenAI.
      if (local === undefined && remote === null) throw notFound(config, fields.model);
      checkRequestBody(req.pathname, fields.skeleton, { maxMessages: config.maxMessages });
      const path = req.pathname + req.search;
      // With keys configured, the proxy's key is ours to check, not the backend's to see.
      const headers = r.caller ? withoutCredentials(req.headers) : req.headers;
      const forwarded = await toPeer(r, config, local?.id ?? remote!.id, remote, {
        path,
        headers,
        body,
      });
      if (forwarded !== null) {
        hold.release();
        return forwarded;
      }
      // Only a request a peer forwarded here can name a model this node does not serve.
      if (local === undefined) throw notFound(config, fields.model);
      model = local;
      const priority = effectivePriority(
        r.caller?.priority ?? "interactive",
        readPriority(req.headers),
      );
      job = new Job({
        id: r.id,
        model: model.id,
        method: "POST",
        path,
        body,
        headers,
        stream: fields.stream,
        priority,
        owner: r.caller?.name ?? null,
        finishOnDisconnect: model.onDisconnect === "finish",
        enqueuedAt: clock.now(),
      });
      // A deadline cancelled when the job ends: nothing keeps the job alive after.
      const expiring = job;
      stopTimer = timeouts.after(config.requestTimeoutMs, () => expiring.expire());
      dispatcher.submit(job);
    } catch (err) {
      stopTimer?.();
      hold.release();
      throw err;
    }
    job.onFinished(() => stopTimer?.());
    // The body counts in max_queued_bytes for as long as it is kept: until the answer starts.
    job.onRequestReleased(() => hold.release());
    const clientGone = () => job.clientGone(clock.now());
    req.signal.addEventListener("abort", clientGone, { once: true });
    // The client may have gone while its body was parsed: the event fired before we listened.
    if (req.signal.aborted) clientGone();
    const chat = req.pathname === "/v1/chat/completions";
    return await respond(job, {
      keepaliveMs: config.keepaliveMs,
      timeoutS: config.requestTimeoutMs / 1000,
      describeWait: (j) => dispatcher.describeWait(j),
      waitHeaders: (j) => ({
        "x-queue-position": String(dispatcher.queue.positionOf(j)),
        "x-queue-eta": String(Math.round(dispatcher.estimateStartMs(j) / 1000)),
      }),
      onClientGone: clientGone,
      waitFeedback: model.waitFeedback === "reasoning" && chat ? "reasoning" : "comment",
    });
  }

  return {
    takes(method, pathname) {
      // Any case: a web Request upper-cases `post`, and Hono then routed it here.
      if (method !== "POST" && method.toUpperCase() !== "POST") return false;
      const path = routedPath(pathname);
      return (path === "/v1" || path.startsWith("/v1/")) && !NOT_MODELS.test(path);
    },
    async answer(http) {
      const held = arrivals.pass();
      if (held !== null) await held;
      const r: ModelRequest = { http, id: newRequestId(), caller: null, hop: null };
      let response: Answer;
      try {
        const admission = await admit(deps, http.headers, true);
        r.caller = admission.caller;
        r.hop = admission.hop;
        response = await serve(r);
      } catch (err) {
        response = errorResponse(deps, err, { id: r.id, path: http.pathname });
      }
      setHeader(response, "x-request-id", r.id);
      return response;
    },
  };
}
