/**
 * @module
 * The OpenAI-compatible surface: `/v1/models` and every `POST /v1/*` whose JSON body names a
 * configured model (chat, completions, embeddings, rerank, messages, …). Routes validate,
 * enqueue and stream; they never swap.
 */
import { type Context, Hono } from "hono";
import { effectivePriority, parseRoutingFields, readBody, readPriority } from "../lib/body.ts";
import { findModel } from "../lib/config.ts";
import type { Config, ModelConfig } from "../lib/config_types.ts";
import { withoutCredentials } from "../lib/auth.ts";
import { checkRequestBody } from "../lib/request_checks.ts";
import { REQUEST_ID } from "../lib/request_id.ts";
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
import { serves } from "../lib/cluster/router.ts";
import { Job } from "../lib/jobs.ts";
import type { ModelState } from "../lib/swap_manager.ts";
import type { KvStatus } from "../lib/kv_slots.ts";
import { respond } from "../lib/relay.ts";
import { Deadlines } from "../lib/deadlines.ts";
import type { AppDeps, AppEnv } from "./app.ts";

function modelEntry(model: ModelConfig, created: number, state: ModelState, kvCache: KvStatus) {
  return {
    id: model.id,
    object: "model",
    created,
    owned_by: "local",
    loaded: state === "loaded",
    state,
    kv_cache: kvCache,
  };
}

/** How long past request_timeout a forward may take before this node gives up on the peer. */
const FORWARD_MARGIN_MS = 5000;

function notFound(config: Config, name: string) {
  return modelNotFound(name, config.models.map((m) => m.id));
}

export function openaiRoutes(deps: AppDeps): Hono<AppEnv> {
  const { live, dispatcher, clock } = deps;
  const created = Math.floor(deps.metrics.startedAt / 1000);
  const app = new Hono<AppEnv>();
  // Every request's request_timeout, on one shared timer.
  const timeouts = new Deadlines();
  const entry = (model: ModelConfig) =>
    modelEntry(model, created, deps.models.stateOf(model.id), deps.models.kvStatus(model));

  /** Every model, in a cluster the union of every live node's with where each one runs. */
  function listing() {
    const data = live.current.models.map(entry);
    const cluster = deps.cluster;
    if (cluster === null) return data;
    const nodes = cluster.nodes();
    const where = (id: string) => ({
      resident_on: nodes.filter((n) =>
        n.residents.some((r) => r.model === id && r.phase === "ready")
      )
        .map((n) => n.node),
      served_by: nodes.filter((n) => serves(n, id)).map((n) => n.node),
    });
    const local = new Set(data.map((m) => m.id));
    const remote = [...new Set(nodes.flatMap((n) => n.models.map((m) => m.id)))]
      .filter((id) => !local.has(id))
      .map((id) => {
        const seen = where(id);
        const loaded = seen.resident_on.length > 0;
        return {
          id,
          object: "model",
          created,
          owned_by: "local",
          loaded,
          state: loaded ? "loaded" : "stopped",
          ...seen,
        };
      });
    return [...data.map((m) => ({ ...m, ...where(m.id) })), ...remote];
  }

  app.get("/models", (c) => c.json({ object: "list", data: listing() }));

  app.get("/models/:id{.+}", (c) => {
    const name = c.req.param("id");
    const id = findModel(live.current, name)?.id ?? deps.cluster?.remoteModel(name)?.id;
    const found = id === undefined ? undefined : listing().find((m) => m.id === id);
    if (found === undefined) throw notFound(live.current, name);
    return c.json(found);
  });

  /**
   * In a cluster: checks the hop header of a request a peer forwarded here (served here, never
   * forwarded again), or answers with the peer this request is routed to
   * (lib/cluster/router.ts). Null when it is served here: routed here, forwarded here, or every
   * peer it was routed to could not be reached and this node serves the model too.
   */
  async function toPeer(
    c: Context<AppEnv>,
    config: Config,
    model: string,
    /** Set when only peers serve `model`. */
    remote: RemoteModel | null,
    request: { path: string; headers: Headers; body: Uint8Array<ArrayBuffer> },
  ): Promise<Response | null> {
    const cluster = deps.cluster;
    if (cluster === null) return null;
    const req = c.req.raw;
    const { path, body } = request;
    const hopHeader = c.get("hop");
    if (hopHeader !== null) {
      const hop = cluster.verifyHop(hopHeader, { method: req.method, path, body });
      if (hop === null) throw invalidHop();
      c.set("caller", hop.caller);
      const firstId = req.headers.get("x-request-id");
      if (firstId !== null && REQUEST_ID.test(firstId)) c.set("requestId", firstId);
      return null;
    }
    if (!dispatcher.accepting) throw shuttingDown();
    const caller = c.get("caller");
    // Ends the forward when the client leaves, at a shutdown here, or past a timeout: the peer
    // ends a request at its own request_timeout, so this only guards against a peer that stops
    // answering altogether. One controller and plain callbacks, released when the answer is
    // through: AbortSignal.any and AbortSignal.timeout cost a WeakRef, a finalizer and a timer
    // left queued for request_timeout per request.
    const cut = new AbortController();
    const signal = cut.signal;
    let timedOut = false;
    const clientGone = () => cut.abort(req.signal.reason);
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
    req.signal.addEventListener("abort", clientGone, { once: true });
    deps.closing.addEventListener("abort", closing, { once: true });
    if (req.signal.aborted) clientGone();
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
          id: c.get("requestId"),
          model,
          to: route.peer.node,
          status,
          // Until the peer's headers: its queue wait, and any load it had to do.
          ms: clock.now() - began,
        });
      try {
        const answer = await cluster.forward(route.peer, {
          ...request,
          id: c.get("requestId"),
          method: req.method,
          signal,
          onEnd: release,
        }, caller);
        told(answer.status);
        return answer;
      } catch (err) {
        // Nothing reached that peer, and it is out of the routing now: decide again.
        if (err instanceof PeerUnreachableError) continue;
        release();
        const error = err instanceof PeerFailedError
          ? peerFailed(route.peer.node)
          : req.signal.aborted
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

  app.post("/*", async (c) => {
    // One config for the whole request, even if a reload lands while it is read.
    const config = live.current;
    const req = c.req.raw;
    const contentType = req.headers.get("content-type") ?? "";
    if (/^multipart\//i.test(contentType)) throw unsupportedMediaType(contentType);
    // Counted from the first byte read until the request ends (max_queued_bytes).
    const hold = dispatcher.bodies.hold(c.get("caller")?.name ?? null);
    let job: Job;
    let model: ModelConfig;
    let chat: boolean;
    let stopTimer: (() => void) | undefined;
    try {
      const body = await readBody(req, config.maxBodyBytes, hold);
      const url = new URL(req.url);
      chat = url.pathname === "/v1/chat/completions";
      const fields = parseRoutingFields(body, config.maxJsonDepth);
      const local = findModel(config, fields.model);
      const remote = local === undefined ? deps.cluster?.remoteModel(fields.model) ?? null : null;
      // An unknown model is a 404 before anything about the body, as with OpenAI.
      if (local === undefined && remote === null) throw notFound(config, fields.model);
      checkRequestBody(url.pathname, fields.skeleton, { maxMessages: config.maxMessages });
      const path = url.pathname + url.search;
      // With keys configured, the proxy's key is ours to check, not the backend's to see.
      const headers = c.get("caller") ? withoutCredentials(req.headers) : req.headers;
      const forwarded = await toPeer(c, config, local?.id ?? remote!.id, remote, {
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
        c.get("caller")?.priority ?? "interactive",
        readPriority(req.headers),
      );
      job = new Job({
        id: c.get("requestId"),
        model: model.id,
        method: req.method,
        path,
        body,
        headers,
        stream: fields.stream,
        priority,
        owner: c.get("caller")?.name ?? null,
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
    job.onFinished(() => {
      stopTimer?.();
      hold.release();
    });
    const clientGone = () => job.clientGone(clock.now());
    req.signal.addEventListener("abort", clientGone, { once: true });
    // The client may have gone while its body was parsed: the event fired before we listened.
    if (req.signal.aborted) clientGone();
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
  });

  return app;
}
