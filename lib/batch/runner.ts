/**
 * @module
 * Feeds batch lines from the store to the dispatcher. It holds only a small window of
 * claimed lines in memory (the store stays the queue), claims from the loaded model's lane
 * first so a batch does not cause swaps, and hands them to the dispatcher at batch priority, where
 * the scheduler puts interactive requests first. Each line's answer is written to the store
 * once (a completion only counts for the claim that holds it); on shutdown, lines not yet
 * started go back to their lanes for the next start.
 */
import type { Clock } from "../clock.ts";
import { ApiError, batchCancelled, lineError, shuttingDown } from "../errors.ts";
import { Job } from "../jobs.ts";
import type { Logger } from "../log.ts";
import type { SwapManager } from "../swap_manager.ts";
import type { AsyncOutcome, JobRecord, JobStore } from "../store/contract.ts";
import type { StoreStatus } from "../store/status.ts";
import type { Dispatcher } from "../dispatcher.ts";
import { answerBody, type LinePayload, type LineResult, outputLine } from "./lines.ts";
import { allLinesFinal, type BatchService, type BatchStatus } from "./service.ts";

/** How often a shared store (Redis) is looked at for work other nodes queued. */
const POLL_MS = 2000;
/**
 * The same for a store only this node uses (Deno KV, memory): its lines come from this node's
 * uploads and recoveries, which wake the runner themselves, so the poll is only a safety net.
 * Every 2 s it cost a store read per lane, ~1 ms/s of an otherwise idle process's CPU.
 */
const LOCAL_POLL_MS = 30_000;
/** How long a batch's status and size are trusted without reading them again. */
const BATCH_INFO_MS = 1000;

export interface BatchRunnerDeps {
  store: JobStore;
  status: StoreStatus;
  dispatcher: Dispatcher;
  models: SwapManager;
  service: BatchService;
  node: string;
  clock: Clock;
  log: Logger;
  /** Configured model ids: the lanes (asked each time: a reload may change them). */
  lanes(): readonly string[];
  /** In a cluster: whether a live peer has `model` ready or loading. */
  peerHas(model: string): boolean;
  /** Lines held in memory at once. */
  window: number;
  requestTimeoutMs(): number;
}

export class BatchRunner {
  readonly #deps: BatchRunnerDeps;
  /** Claimed lines in memory, each with the promise that ends when its outcome is stored. */
  readonly #held = new Map<string, { record: JobRecord; job: Job; finished: Promise<void> }>();
  #filling = false;
  #again = false;
  #closing = false;
  #poll: ReturnType<typeof setInterval> | null = null;
  /** Answers the store could not take (it was down): written once it is back. */
  readonly #unrecorded: { record: JobRecord; state: AsyncOutcome; line: string }[] = [];
  /**
   * Lanes of models a reload removed: their lines fail as requests for a removed model do,
   * instead of waiting for a model no node here will load. Kept while this process runs (lines
   * recovered from a dead peer may come back to them); an empty lane's claim costs one call.
   */
  readonly #orphans = new Set<string>();
  /** The lanes at the last look, to see which a reload removed. */
  #lanesBefore: readonly string[] = [];
  /** Status and line count per batch, read at most once a BATCH_INFO_MS. */
  readonly #batchInfo = new Map<
    string,
    { status: BatchStatus | null; total: number; at: number }
  >();

  constructor(deps: BatchRunnerDeps) {
    this.#deps = deps;
  }

  start(): void {
    const shared = this.#deps.store.name === "redis";
    this.#poll = setInterval(() => this.wake(), shared ? POLL_MS : LOCAL_POLL_MS);
    this.#deps.models.onChange(() => this.wake());
    this.#deps.status.onUp(() => {
      this.#recordLate().then(() => this.wake());
    });
    this.wake();
    this.#settleOpen();
  }

  /** Something changed (new lines, a line finished, another model loaded): fill the window. */
  wake(): void {
    if (this.#filling) {
      this.#again = true;
      return;
    }
    this.#filling = true;
    this.#fill().finally(() => {
      this.#filling = false;
      if (this.#again) {
        this.#again = false;
        this.wake();
      }
    });
  }

  /** Drops the held lines of a cancelled batch that have not started; running ones finish. */
  cancelGroup(batchId: string): void {
    this.#batchInfo.delete(batchId);
    for (const { record, job } of this.#held.values()) {
      if (record.group === batchId && job.state === "queued") job.cancel(batchCancelled());
    }
  }

  /**
   * Stops claiming. Held lines that have not started go back to their lanes; running ones
   * may finish (their answers are still written) until the dispatcher's grace runs out.
   */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#poll !== null) clearInterval(this.#poll);
    const waiting = [...this.#held.values()].filter(({ job }) => job.state === "queued");
    // Each one's own ending sees the shutdown and puts it back in its lane.
    for (const { job } of waiting) job.cancel(shuttingDown());
    await Promise.all(waiting.map(({ finished }) => finished));
  }

  async #fill(): Promise<void> {
    const { store, status, node, clock, window } = this.#deps;
    while (!this.#closing && status.up && this.#held.size < window) {
      let claimed: JobRecord[] = [];
      try {
        for (const lane of await this.#laneOrder()) {
          claimed = await store.claim(lane, node, window - this.#held.size, clock.now());
          if (claimed.length > 0) break;
        }
      } catch (err) {
        status.down(err);
        return;
      }
      if (claimed.length === 0) return;
      for (const record of claimed) await this.#start(record);
    }
  }

  /**
   * The resident models' lanes first: their lines run without a swap. Then the others, except
   * a lane whose model a peer has loaded (or is loading) and that peer keeps up with: no more
   * lines wait unclaimed than two windows. Loading the model here too would be a swap for
   * nothing; past that backlog, this node helps.
   */
  async #laneOrder(): Promise<string[]> {
    const { store, window } = this.#deps;
    const resident = new Set(this.#deps.models.snapshot().residents.map((r) => r.model));
    const lanes = [...this.#deps.lanes()];
    for (const lane of this.#lanesBefore) if (!lanes.includes(lane)) this.#orphans.add(lane);
    for (const lane of lanes) this.#orphans.delete(lane); // added back
    this.#lanesBefore = lanes;
    // A peer that has a removed model loaded serves its lane; otherwise it ends here.
    const orphans = [...this.#orphans].filter((lane) => !this.#deps.peerHas(lane));
    const others: string[] = [];
    for (const lane of lanes.filter((l) => !resident.has(l))) {
      if (this.#deps.peerHas(lane) && await store.laneSize(lane) <= 2 * window) continue;
      others.push(lane);
    }
    return [...lanes.filter((l) => resident.has(l)), ...others, ...orphans];
  }

  async #start(record: JobRecord): Promise<void> {
    const { clock, dispatcher } = this.#deps;
    const payload = JSON.parse(record.payload!) as LinePayload;
    // A read that failed (a store timeout) says nothing of a cancel: the line runs, as lines
    // already running in a batch being cancelled do, and its answer is recorded as theirs are.
    const info = await this.#infoOf(record.group!).catch(() => null);
    if (info !== null && info.status !== "in_progress") {
      // Cancelled (or gone) while the line waited in its lane.
      await this.#complete(record, "cancelled", cancelledLine(payload.custom_id));
      return;
    }
    if (this.#closing) {
      // Claimed just as the proxy began to stop: back to its lane, for the next start.
      await this.#release([record.id]);
      return;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const job = new Job({
      id: record.id,
      model: record.model,
      method: "POST",
      path: payload.url,
      body: new TextEncoder().encode(JSON.stringify(payload.body)),
      headers: new Headers({ "content-type": "application/json" }),
      stream: false,
      priority: "batch",
      enqueuedAt: clock.now(),
    });
    // Earlier claims count toward max_attempts (the node running them died).
    job.attempts = record.attempts - 1;
    // The request timeout covers the request, not the wait behind interactive work.
    job.observe((_, from) => {
      if (from === "queued" && job.state === "running") {
        timer ??= setTimeout(() => job.expire(), this.#deps.requestTimeoutMs());
      }
    });
    job.onFinished(() => clearTimeout(timer));
    try {
      dispatcher.submitBatch(job);
    } catch (err) {
      if (err instanceof ApiError && err.code === "model_not_found") {
        // Its model was removed by a reload (since the claim, or its lane is an orphan's).
        await this.#complete(record, "failed", {
          customId: payload.custom_id,
          response: null,
          error: lineError(err),
        });
      } else {
        // Not the line's fault (the dispatcher stopped): back to its lane for a later start.
        this.#deps.log.warn("batch_line_not_started", { id: record.id, error: String(err) });
        await this.#release([record.id]);
      }
      return;
    }
    const finished = this.#finishLine(record, job, payload.custom_id);
    this.#held.set(record.id, { record, job, finished });
  }

  async #finishLine(record: JobRecord, job: Job, customId: string): Promise<void> {
    const outcome = await job.outcome;
    // A response's body must be read before its job can finish; then its state is final.
    const text = outcome.kind === "response"
      ? await outcome.response.text().catch((err) => String(err))
      : "";
    await new Promise<void>((resolve) => job.onFinished(resolve));
    const stoppedByShutdown = this.#closing && job.state !== "dead" &&
      (job.state === "cancelled" || outcome.kind === "error");
    if (stoppedByShutdown) {
      // Not the line's own failure: it runs again after the restart.
      this.#held.delete(record.id);
      await this.#release([record.id]);
    } else if (job.state === "cancelled") {
      await this.#complete(record, "cancelled", cancelledLine(customId));
    } else if (outcome.kind === "response") {
      const { response } = outcome;
      await this.#complete(record, response.ok ? "done" : "failed", {
        customId,
        response: { statusCode: response.status, requestId: job.id, body: answerBody(text) },
        error: null,
      });
    } else {
      await this.#complete(record, job.state === "dead" ? "dead" : "failed", {
        customId,
        response: null,
        error: lineError(outcome.error),
      });
    }
  }

  async #complete(record: JobRecord, state: AsyncOutcome, result: LineResult): Promise<void> {
    const line = outputLine(`batch_req_${record.id}`, result);
    try {
      await this.#record(record, state, line);
    } catch (err) {
      // The store is down; this node still holds the claim, so the answer is kept and
      // written when the store is back (the line is not run twice).
      this.#deps.log.warn("batch_line_unrecorded", { id: record.id, error: String(err) });
      this.#unrecorded.push({ record, state, line });
    } finally {
      this.#held.delete(record.id);
      this.wake();
    }
  }

  async #record(record: JobRecord, state: AsyncOutcome, line: string): Promise<void> {
    const { store, status, node, clock, service, log } = this.#deps;
    const counted = await status.run(() =>
      store.complete(record.id, node, record.attempts, state, line, clock.now())
    );
    if (!counted) log.warn("batch_line_lost_lease", { id: record.id });
    // Finalizing reads every line: only when this was the last one.
    const info = await status.run(() => this.#infoOf(record.group!));
    const counts = await status.run(() => store.groupCounts(record.group!));
    if (allLinesFinal(counts, info.total)) {
      await status.run(() => service.settle(record.group!));
    }
  }

  async #infoOf(batchId: string): Promise<{ status: BatchStatus | null; total: number }> {
    const now = this.#deps.clock.now();
    const cached = this.#batchInfo.get(batchId);
    if (cached !== undefined && now - cached.at < BATCH_INFO_MS) return cached;
    const batch = await this.#deps.service.find(batchId);
    const info = {
      status: batch?.status ?? null,
      total: batch?.request_counts.total ?? 0,
      at: now,
    };
    this.#batchInfo.set(batchId, info);
    if (this.#batchInfo.size > 1000) this.#batchInfo.delete(this.#batchInfo.keys().next().value!);
    return info;
  }

  /** Writes the answers kept while the store was down, then settles open batches. */
  async #recordLate(): Promise<void> {
    while (this.#unrecorded.length > 0) {
      const { record, state, line } = this.#unrecorded[0];
      try {
        await this.#record(record, state, line);
      } catch {
        return; // down again; the next recovery retries
      }
      this.#unrecorded.shift();
    }
    await this.#settleOpen();
  }

  async #release(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const { store, node, clock, log } = this.#deps;
    await store.release(ids, node, clock.now()).catch((err) =>
      log.warn("batch_release_failed", { lines: ids.length, error: String(err) })
    );
  }

  /** Finalizes batches whose last line finished while no node was there to do it. */
  async #settleOpen(): Promise<void> {
    try {
      for (const batch of await this.#deps.service.openBatches()) {
        await this.#deps.service.settle(batch.id);
      }
    } catch (err) {
      this.#deps.status.down(err);
    }
  }
}

function cancelledLine(customId: string): LineResult {
  return { customId, response: null, error: lineError(batchCancelled()) };
}
