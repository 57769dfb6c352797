/**
 * @module
 * Where a request for a model goes, decided on arrival at any node (pure; docs/cluster.md):
 * 1. the model is ready (and not being stopped), loading or waited for here → the local queue;
 * 2. else it is so on a live peer → that peer (the least loaded of them);
 * 3. else the peer this node sent it to moments ago, while that peer's heartbeat cannot show
 *    it yet → that peer again;
 * 4. else the node where loading it costs least: one with room for it beside its residents
 *    (an idle node has room for anything), then the least waiting and running work; this node
 *    wins a tie. A node that cannot serve the model is never picked. Such a decision is `cold`:
 *    two nodes may make it at once from heartbeats a moment old, so the caller has one node
 *    win it (lib/cluster/cluster.ts).
 */
import type { NodeStatus } from "./node_board.ts";

export type Route =
  | { kind: "local"; cold: boolean }
  | { kind: "peer"; peer: NodeStatus; cold: boolean };

const LOCAL: Route = { kind: "local", cold: false };

/** Whether `node`'s config lists `model`. */
export function serves(node: NodeStatus, model: string): boolean {
  return node.models.some((m) => m.id === model);
}

/**
 * The model is ready or loading there. One being stopped (draining, stopping) does not count:
 * sending more work there would load it back.
 */
export function hasLoaded(node: NodeStatus, model: string): boolean {
  return node.residents.some((r) =>
    r.model === model && (r.phase === "ready" || r.phase === "starting")
  );
}

/** The model is ready or loading there, or requests wait for it. */
function engaged(node: NodeStatus, model: string): boolean {
  return hasLoaded(node, model) || (node.waiting[model] ?? 0) > 0;
}

/** Work a node has on its hands: requests waiting for any model, and being served. */
function workOf(node: NodeStatus): number {
  let waiting = 0;
  for (const n of Object.values(node.waiting)) waiting += n;
  return waiting + node.running;
}

/**
 * Routes a request for `model` (a canonical id) arriving at `self`. `recent` is the peer this
 * node routed `model` to last, if that was within a lease.
 */
export function route(
  model: string,
  self: NodeStatus,
  peers: readonly NodeStatus[],
  recent: string | null,
): Route {
  const selfServes = serves(self, model);
  if (selfServes && engaged(self, model)) return LOCAL;
  const able = peers.filter((p) => serves(p, model));
  const busy = able.filter((p) => engaged(p, model));
  if (busy.length > 0) return { kind: "peer", peer: leastLoaded(busy), cold: false };
  const again = able.find((p) => p.node === recent);
  if (again !== undefined) return { kind: "peer", peer: again, cold: false };
  const candidates = selfServes ? [self, ...able] : able;
  if (candidates.length === 0) return LOCAL; // nobody serves it: the local 404 says so
  const best = candidates.reduce((a, b) => cost(b, model) < cost(a, model) ? b : a);
  return best === self ? { kind: "local", cold: true } : { kind: "peer", peer: best, cold: true };
}

/** Lower is cheaper: room for the model first (×1e9 keeps that ahead of any work count). */
function cost(node: NodeStatus, model: string): number {
  return (node.roomFor.includes(model) ? 0 : 1e9) + workOf(node);
}

function leastLoaded(nodes: readonly NodeStatus[]): NodeStatus {
  return nodes.reduce((a, b) => workOf(b) < workOf(a) ? b : a);
}
