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
import type { Caller } from "../lib/auth.ts";
import { routeNotFound } from "../lib/errors.ts";
import type { Cluster } from "../lib/cluster/cluster.ts";
import type { Handler } from "../lib/http_server.ts";
import type { Logger } from "../lib/log.ts";
import type { Metrics } from "../lib/metrics.ts";
import { newRequestId } from "../lib/request_id.ts";
import type { SwapManager } from "../lib/swap_manager.ts";
import type { Dispatcher } from "../lib/dispatcher.ts";
import type { BatchService } from "../lib/batch/service.ts";
import type { JobStore } from "../lib/store/contract.ts";
import type { StoreStatus } from "../lib/store/status.ts";
import { adminRoutes } from "./admin.ts";
import { batchRoutes } from "./batches.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { admit, errorResponse } from "./gate.ts";
import { modelRoute } from "./model_route.ts";
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
  };
};

/**
 * Everything the proxy answers: the model requests on the server's direct path
 * (routes/model_route.ts), the rest through Hono.
 */
export function createApp(deps: AppDeps): Handler {
  const app = new Hono<AppEnv>();
  app.use(async (c, next) => {
    c.set("requestId", newRequestId());
    await next();
    c.res.headers.set("x-request-id", c.get("requestId"));
  });
  // With keys configured, every /v1 route needs one; /health and /metrics stay open.
  app.use("/v1/*", async (c, next) => {
    c.set("caller", (await admit(deps, c.req.raw.headers, false)).caller);
    await next();
  });
  app.route("/", opsRoutes(deps));
  app.route("/", dashboardRoutes(deps));
  app.route("/v1", batchRoutes(deps));
  app.route("/v1", openaiRoutes(deps));
  app.route("/admin", adminRoutes(deps));
  app.notFound((c) => routeNotFound(c.req.method, c.req.path).toResponse());
  app.onError((err, c) => errorResponse(deps, err, { id: c.get("requestId"), path: c.req.path }));
  return { fetch: app.fetch, direct: modelRoute(deps) };
}
