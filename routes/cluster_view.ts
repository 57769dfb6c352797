/**
 * @module
 * The cluster as `/health`, `/metrics` and the dashboard tell it: every live node, this one
 * first, with what it has resident and what waits there.
 */
import type { Cluster } from "../lib/cluster/cluster.ts";

export function clusterView(cluster: Cluster) {
  return {
    node: cluster.node,
    nodes: cluster.nodes().map((n) => ({
      node: n.node,
      url: n.url,
      self: n.node === cluster.node,
      resident_models: n.residents,
      queue_depth: n.waiting,
      running: n.running,
      free_workers: n.freeWorkers,
      models: n.models.map((m) => m.id),
    })),
  };
}
