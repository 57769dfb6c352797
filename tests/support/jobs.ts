/** Builds Job objects for unit tests of the queue and relay, without a route or server. */
import { Job } from "../../lib/jobs.ts";
import { newRequestId } from "../../lib/request_id.ts";

export interface TestJob {
  job: Job;
  /** Simulates the client going away. */
  disconnect(): void;
  /** Simulates `request_timeout` passing. */
  expire(): void;
}

export function makeJob(
  model: string,
  options: { stream?: boolean; now?: number; owner?: string } = {},
): TestJob {
  const job = new Job({
    id: newRequestId(),
    model,
    method: "POST",
    path: "/v1/chat/completions",
    body: new TextEncoder().encode(`{"model":"${model}"}`),
    headers: new Headers({ "content-type": "application/json" }),
    stream: options.stream ?? false,
    priority: "interactive",
    owner: options.owner ?? null,
    enqueuedAt: options.now ?? 0,
  });
  return { job, disconnect: () => job.cancel(), expire: () => job.expire() };
}
