/**
 * @module
 * The OpenAI-compatible model listing: `/v1/models` and `/v1/models/{id}`, in a cluster with
 * where each model runs. The model requests themselves are routes/model_route.ts.
 */
import { Hono } from "hono";
import { findModel } from "../lib/config.ts";
import type { ModelConfig } from "../lib/config_types.ts";
import { modelNotFound } from "../lib/errors.ts";
import { serves } from "../lib/cluster/router.ts";
import type { ModelState } from "../lib/swap_manager.ts";
import type { KvStatus } from "../lib/kv_slots.ts";
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

export function openaiRoutes(deps: AppDeps): Hono<AppEnv> {
  const { live } = deps;
  const created = Math.floor(deps.metrics.startedAt / 1000);
  const app = new Hono<AppEnv>();
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
    if (found === undefined) throw modelNotFound(name, live.current.models.map((m) => m.id));
    return c.json(found);
  });

  return app;
}
