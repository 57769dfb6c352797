/**
 * @module
 * Builds the Hono app: mounts each route file and renders every error, in one place, in
 * the OpenAI error shape. Unexpected errors become a generic 500; details go to the log.
 */
import { Hono } from "hono";
import type { Activity } from "../lib/activity.ts";
import type { Clock } from "../lib/clock.ts";
import type { LiveConfig } from "../lib/live_config.ts";
import type { ReloadResult } from "../lib/config_reload.ts";
import type { Docker } from "../lib/docker.ts";
import { type Caller, presentedKey } from "../lib/auth.ts";
import {
  ApiError,
  invalidApiKey,
  invalidHop,
  routeNotFound,
  storeUnavailable,
  toApiError,
} from "../lib/errors.ts";
import type { Cluster } from "../lib/cluster/cluster.ts";
import { HOP_HEADER } from "../lib/cluster/hop.ts";
import type { Logger } from "../lib/log.ts";
import type { Metrics } from "../lib/metrics.ts";
import { newRequestId } from "../lib/request_id.ts";
import type { SwapManager } from "../lib/swap_manager.ts";
import type { Dispatcher } from "../lib/dispatcher.ts";
import type { BatchService } from "../lib/batch/service.ts";
import { type JobStore, StoreUnavailableError } from "../lib/store/contract.ts";
import type { StoreStatus } from "../lib/store/status.ts";
import { adminRoutes } from "./admin.ts";
import { batchRoutes } from "./batches.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { openaiRoutes } from "./openai.ts";
import { opsRoutes } from "./ops.ts";

export interface AppDeps {
  /** The config in force; read it per request (a reload may replace it). */
  live: LiveConfig;
  docker: Docker;
  models: SwapManager;
  dispatcher: Dispatcher;
  metrics: Metrics;
  log: Logger;
  clock: Clock;
  store: JobStore;
  storeStatus: StoreStatus;
  batches: BatchService;
  activity: Activity;
  /** This node's part in a cluster; null for a single proxy. */
  cluster: Cluster | null;
  /** Aborts when the proxy shuts down: long-lived responses (dashboards) end then. */
  closing: AbortSignal;
  /** Reloads the config file; null when the proxy was started without one. */
  reload: ((trigger: string) => Promise<ReloadResult>) | null;
}

/** Per-request values: the id shown to the client (`x-request-id`) and in log lines. */
export type AppEnv = {
  Variables: {
    requestId: string;
    caller: Caller | null;
    /**
     * A hop header naming this node, not verified yet: the model routes check it once the body
     * it is bound to is read (then `caller` is the one it vouches for); null without one.
     */
    hop: string | null;
  };
};

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use(async (c, next) => {
    c.set("requestId", newRequestId());
    await next();
    // A forwarded request may take its first node's id, for log lines that match.
    c.res.headers.set("x-request-id", c.get("requestId"));
  });
  // With keys configured, every /v1 route needs one; /health and /metrics stay open. A model
  // request a peer forwarded carries a hop header instead: that node checked the key.
  app.use("/v1/*", async (c, next) => {
    c.set("hop", null);
    const hop = c.req.header(HOP_HEADER);
    if (hop !== undefined) {
      const modelRoute = c.req.method === "POST" &&
        !/^\/v1\/(files|batches)(\/|$)/.test(c.req.path);
      if (!modelRoute || !deps.cluster?.plausibleHop(hop)) throw invalidHop();
      c.set("hop", hop);
      c.set("caller", null);
      return await next();
    }
    let caller: Caller | null = null;
    const keys = deps.live.keys;
    if (!keys.open) {
      caller = await keys.identify(presentedKey(c.req.raw.headers));
      if (caller === null) throw invalidApiKey();
    }
    c.set("caller", caller);
    await next();
  });
  app.route("/", opsRoutes(deps));
  app.route("/", dashboardRoutes(deps));
  // Before the OpenAI routes: their POST /v1/* would take /v1/files and /v1/batches.
  app.route("/v1", batchRoutes(deps));
  app.route("/v1", openaiRoutes(deps));
  app.route("/admin", adminRoutes(deps));
  app.notFound((c) => routeNotFound(c.req.method, c.req.path).toResponse());
  app.onError((err, c) => {
    const id = c.get("requestId");
    if (err instanceof StoreUnavailableError) return storeUnavailable(err.message).toResponse();
    const apiError = toApiError(err, id);
    if (!(err instanceof ApiError)) {
      deps.log.error("unexpected_error", {
        id,
        path: c.req.path,
        error: err instanceof Error ? err.stack ?? err.message : String(err),
      });
    }
    return apiError.toResponse();
  });
  return app;
}
