/**
 * @module
 * What a waiting client is told: an estimate of when its request starts, and the line the
 * SSE comments and reasoning notes carry. Pure: the dispatcher hands in what it knows.
 */
import type { Job } from "./jobs.ts";
import type { ModelSnapshot, ResidentView } from "./swap_manager.ts";

export interface EtaInputs {
  now: number;
  /** The job's model in the resident set, or undefined when it is stopped. */
  resident: Pick<ResidentView, "phase" | "since" | "inflight"> | undefined;
  /** The learned load time of the job's model. */
  loadMs: number;
  /** The average time a request holds its backend. */
  serviceMs: number;
  /** Requests running on any model. */
  running: number;
  /** Requests of the job's model waiting before it (its running ones are the resident's). */
  ahead: number;
  /** Requests its model serves at once. */
  parallel: number;
}

/**
 * Estimated ms until `job` starts: the rest of its model's load in progress (or a whole
 * learned load after the running requests), then its turn among its model's requests.
 * An estimate: other models' due jobs may still go first.
 */
export function startEstimateMs(inputs: EtaInputs): number {
  const resident = inputs.resident;
  let ms = 0;
  if (resident?.phase !== "ready") {
    ms += resident?.phase === "starting"
      ? Math.max(0, inputs.loadMs - (inputs.now - resident.since))
      : inputs.loadMs + (inputs.running > 0 ? inputs.serviceMs / 2 : 0);
  }
  const turns = Math.floor((inputs.ahead + (resident?.inflight ?? 0)) / inputs.parallel);
  return Math.round(ms + turns * inputs.serviceMs);
}

/** A line for a waiting client: its place, what the GPU is doing, and an ETA. */
export function waitLine(
  job: Job,
  position: number,
  etaMs: number,
  snapshot: ModelSnapshot,
  now: number,
): string {
  const eta = `eta=${Math.round(etaMs / 1000)}s`;
  const starting = snapshot.residents.find((r) => r.phase === "starting");
  if (starting === undefined) return `queued position=${position} ${eta}`;
  const seconds = Math.round((now - starting.since) / 1000);
  if (starting.model === job.model) {
    return `loading model ${job.model} ${seconds}s position=${position} ${eta}`;
  }
  return `queued position=${position} ${eta} (loading model ${starting.model} ${seconds}s)`;
}
