/**
 * @module
 * Which models may run together, and whom to stop to make room: pure functions over the
 * declared `memory` of each model, the `memory_budget`, and the backend ports. The model
 * manager (which carries placements out), the scheduler's view and the simulator all ask
 * here, so they agree on every decision.
 */

/** What a model takes from the machine while its container runs. */
export interface Footprint {
  /** Declared GB; null without a budget. */
  memoryGb: number | null;
  /** host:port of its backend: two containers cannot listen on one port. */
  endpoint: string;
}

export interface Capacity {
  /** GB the running models may declare together; null: one model at a time. */
  budgetGb: number | null;
  footprint(model: string): Footprint;
}

/** A model whose container runs (or starts, or stops), and when it was last used. */
export interface Occupant {
  model: string;
  lastUsed: number;
}

/** Whether `models` may all run at once. */
export function fitsTogether(models: readonly string[], capacity: Capacity): boolean {
  if (capacity.budgetGb === null) return models.length <= 1;
  const endpoints = new Set<string>();
  let memory = 0;
  for (const model of models) {
    const footprint = capacity.footprint(model);
    if (endpoints.has(footprint.endpoint)) return false;
    endpoints.add(footprint.endpoint);
    memory += footprint.memoryGb ?? 0;
  }
  return memory <= capacity.budgetGb + 1e-9;
}

/**
 * The occupants to stop so that `target` fits beside the rest: the fewest models, and among
 * equally few the least recently used ones. Empty when it fits already. Models that share
 * `target`'s port are always among them.
 */
export function victimsFor(
  target: string,
  occupants: readonly Occupant[],
  capacity: Capacity,
): string[] {
  const others = occupants.filter((o) => o.model !== target);
  const keep = (victims: readonly string[]) => [
    target,
    ...others.filter((o) => !victims.includes(o.model)).map((o) => o.model),
  ];
  if (fitsTogether(keep([]), capacity)) return [];
  // Least recently used first, so the first fitting combination of each size is the LRU one.
  const candidates = [...others].sort((a, b) => a.lastUsed - b.lastUsed).map((o) => o.model);
  for (let size = 1; size <= candidates.length; size++) {
    for (const victims of combinations(candidates, size)) {
      if (fitsTogether(keep(victims), capacity)) return victims;
    }
  }
  return candidates;
}

/** k-element subsets of `items`, in lexicographic order of their positions. */
function* combinations<T>(items: readonly T[], k: number, from = 0): Generator<T[]> {
  if (k === 0) {
    yield [];
    return;
  }
  for (let i = from; i <= items.length - k; i++) {
    for (const rest of combinations(items, k - 1, i + 1)) yield [items[i], ...rest];
  }
}

/** Groups of models (two or more) that share a backend host:port, so never run together. */
export function sharedEndpoints(
  models: readonly { id: string; backendUrl: string }[],
): Map<string, string[]> {
  const byEndpoint = new Map<string, string[]>();
  for (const { id, backendUrl } of models) {
    const endpoint = endpointOf(backendUrl);
    byEndpoint.set(endpoint, [...(byEndpoint.get(endpoint) ?? []), id]);
  }
  return new Map([...byEndpoint].filter(([, ids]) => ids.length > 1));
}

/** host:port of a backend URL, loopback names folded together. */
export function endpointOf(url: string): string {
  const parsed = new URL(url);
  const port = parsed.port || (parsed.protocol === "https:" ? "443" : "80");
  const host = ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"].includes(parsed.hostname)
    ? "localhost"
    : parsed.hostname;
  return `${host}:${port}`;
}

/** The capacity a config declares. */
export function capacityOf(
  config: {
    memoryBudgetGb: number | null;
    models: readonly { id: string; memoryGb: number | null; backendUrl: string }[];
  },
): Capacity {
  const footprints = new Map(
    config.models.map((m) => [m.id, { memoryGb: m.memoryGb, endpoint: endpointOf(m.backendUrl) }]),
  );
  return {
    budgetGb: config.memoryBudgetGb,
    // A model a reload removed still occupies what it did until it stops: count it whole.
    footprint: (model) =>
      footprints.get(model) ?? { memoryGb: config.memoryBudgetGb, endpoint: `removed:${model}` },
  };
}
