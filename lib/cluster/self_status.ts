/**
 * @module
 * What this node tells its peers about itself on each heartbeat, read from the swap manager
 * and the dispatcher.
 */
import type { Config } from "../config_types.ts";
import type { Dispatcher } from "../dispatcher.ts";
import type { SwapManager } from "../swap_manager.ts";
import type { NodeStatus } from "./node_board.ts";

/**
 * This node's status. With `only`, just what routing a request for that model reads (its
 * room, not every model's, and no load times), as that runs per request; the whole status per
 * heartbeat and per operator view (/health, /metrics, the dashboard, /v1/models).
 */
export function selfStatus(
  config: Config,
  models: SwapManager,
  dispatcher: Dispatcher,
  only: string | null = null,
): NodeStatus {
  const cluster = config.cluster!;
  const listed = only === null ? config.models : config.models.filter((m) => m.id === only);
  const snap = models.snapshot();
  const waiting: Record<string, number> = {};
  for (const [model, line] of dispatcher.queue.waiting().lines()) {
    waiting[model] = line.interactive.length + line.batch.length;
  }
  return {
    node: cluster.node,
    url: cluster.advertiseUrl,
    models: listed.map((m) => ({ id: m.id, aliases: [...m.aliases] })),
    // A resident a placement is about to stop is as good as draining to a router.
    residents: snap.residents.map((r) => ({
      model: r.model,
      phase: r.evicting && r.phase === "ready" ? "draining" : r.phase,
    })),
    roomFor: listed.filter((m) =>
      !snap.residents.some((r) => r.model === m.id) && models.victimsFor(m.id).length === 0
    ).map((m) => m.id),
    waiting,
    running: dispatcher.active,
    freeWorkers: snap.residents.reduce((n, r) => n + dispatcher.freeWorkersOn(r), 0),
    loadS: only !== null ? {} : Object.fromEntries(
      config.models.map((m) => [m.id, Math.round(dispatcher.loadTimes.estimate(m.id) / 100) / 10]),
    ),
  };
}
