/**
 * @module
 * Operator endpoints, always behind the admin key: what runs, load or unload a model now,
 * the queue, cancelling a waiting request, and reloading the config file.
 */
import { Hono } from "hono";
import { z } from "zod";
import { presentedKey } from "../lib/auth.ts";
import {
  adminRequired,
  cancelledByAdmin,
  invalidConfig,
  invalidRequest,
  jobNotFound,
  modelNotFound,
  reloadUnavailable,
} from "../lib/errors.ts";
import { SwapFailedError, swapFailureError } from "../lib/swap_failures.ts";
import type { AppDeps, AppEnv } from "./app.ts";
import { queueView } from "./queue_view.ts";

const LoadBody = z.object({ model: z.string().min(1) });
const UnloadBody = z.object({ model: z.string().min(1).optional() });

export function adminRoutes(deps: AppDeps): Hono<AppEnv> {
  const { live, docker, models, dispatcher } = deps;
  const app = new Hono<AppEnv>();

  app.use(async (c, next) => {
    const ring = live.adminKeys;
    if (ring.open || (await ring.identify(presentedKey(c.req.raw.headers))) === null) {
      throw adminRequired(!ring.open);
    }
    await next();
  });

  app.get("/running", async (c) => {
    const snap = models.snapshot();
    const containers = await docker.list();
    return c.json({
      current_model: snap.loaded,
      phase: snap.phase,
      resident_models: snap.residents.map((r) => r.model),
      memory_budget_gb: live.current.memoryBudgetGb,
      containers: live.current.models.map((m) => ({
        model: m.id,
        container: m.containerName,
        exists: containers.some((s) => s.name === m.containerName),
        // The proxy creates it when missing (a container: block).
        managed: m.container !== null,
        running: containers.some((s) => s.name === m.containerName && s.running),
        state: models.stateOf(m.id),
        memory_gb: m.memoryGb,
      })),
    });
  });

  app.post("/load", async (c) => {
    const parsed = LoadBody.safeParse(await c.req.json().catch(() => null));
    if (!parsed.success) {
      throw invalidRequest("invalid_body", 'Expected {"model": "<id>"}', "model");
    }
    const model = live.model(parsed.data.model);
    if (!model) throw modelNotFound(parsed.data.model, live.current.models.map((m) => m.id));
    try {
      const timings = await models.place(model.id, "admin");
      return c.json({ model: model.id, swapped: timings !== null, timings });
    } catch (err) {
      if (err instanceof SwapFailedError) throw swapFailureError(model.id, err);
      throw err;
    }
  });

  /** `{"model": id}` unloads that model; no body unloads every resident. */
  app.post("/unload", async (c) => {
    const text = await c.req.text();
    const parsed = UnloadBody.safeParse(
      text.trim() === "" ? {} : await Promise.try(() => JSON.parse(text)).catch(() => null),
    );
    if (!parsed.success) {
      throw invalidRequest("invalid_body", 'Expected no body or {"model": "<id>"}', "model");
    }
    const id = parsed.data.model;
    if (id !== undefined && !live.model(id)) {
      throw modelNotFound(id, live.current.models.map((m) => m.id));
    }
    const unloaded = await models.unload("admin", id === undefined ? null : live.model(id)!.id);
    // `unloaded` keeps the single-model answer; `unloaded_models` lists them all.
    return c.json({ unloaded: unloaded[0] ?? null, unloaded_models: unloaded });
  });

  app.get("/queue", (c) => c.json(queueView(deps)));

  app.post("/reload", async (c) => {
    if (deps.reload === null) throw reloadUnavailable();
    const result = await deps.reload("admin");
    if (!result.ok) throw invalidConfig(result.problems);
    const { added, removed, changed, settings, restartNeeded } = result.changes;
    return c.json({
      reloaded: true,
      added,
      removed,
      changed,
      settings,
      restart_needed: restartNeeded,
    });
  });

  app.delete("/queue/:id", (c) => {
    const job = dispatcher.queue.find(c.req.param("id"));
    if (!job) throw jobNotFound();
    job.cancel(cancelledByAdmin());
    return c.json({ cancelled: job.id });
  });

  return app;
}
