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
 * room, not every model's, and no load times): that runs per request, the whole status only
 * per heartbeat.
 */
export function selfStatus(
  config: Config,
  models: SwapManager,
  dispatcher: Dispatcher,
  only: string | null = null,
): Omit<NodeStatus, "at"> {
  const cluster = config.cluster!;
  const listed = only === null ? config.models : config.models.filter((m) => m.id === only);
  const snap = models.snapshot();
  const waiting: Record<string, number> = {};
  for (const [model, line] of dispatcher.queue.waiting().lines()) {
    waiting[model] = line.interactive.length + line.batch.length;
  }
  let freeWorkers = 0;
  for (const r of snap.residents) {
    if (r.phase === "ready" && !r.evicting) {
      freeWorkers += Math.max(0, dispatcher.parallelOf(r.model) - r.inflight);
    }
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
    freeWorkers,
    loadS: only !== null ? {} : Object.fromEntries(
      config.models.map((m) => [m.id, Math.round(dispatcher.loadTimes.estimate(m.id) / 100) / 10]),
    ),
  };
}
