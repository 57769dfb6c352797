/**
 * @module
 * Files and batches as the OpenAI API shows them, kept in the job store: uploads are checked
 * and stored, a new batch puts one async job per line in its model's lane, and a batch whose
 * lines are all final is finalized into output and error files. Finalizing writes files with
 * ids derived from the batch, so two nodes (or a node restarted halfway) finishing the same
 * batch write the same files, and the status changes once (compare-and-set).
 *
 * Over 350 lines on purpose: files, batches and finalizing share the same records and the
 * same status rules, which stay right only while they are read in one place.
 */
import type { Clock } from "../clock.ts";
import { invalidRequest, resourceNotFound } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { GroupCounts, JobRecord, JobStore, NewAsyncJob } from "../store/contract.ts";
import {
  BATCH_ENDPOINTS,
  type LinePayload,
  type LineRules,
  outputLine,
  parseBatchFile,
} from "./lines.ts";

export interface FileObject {
  id: string;
  object: "file";
  bytes: number;
  created_at: number;
  filename: string;
  purpose: "batch" | "batch_output";
  status: "processed";
  status_details: null;
}

export type BatchStatus =
  | "validating"
  | "failed"
  | "in_progress"
  | "finalizing"
  | "completed"
  | "expired"
  | "cancelling"
  | "cancelled";

export interface BatchObject {
  id: string;
  object: "batch";
  endpoint: string;
  errors: null;
  input_file_id: string;
  completion_window: string;
  status: BatchStatus;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  expires_at: number;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
}

/** Batches whose lines may still run or need finalizing. */
export const OPEN_STATUSES: readonly BatchStatus[] = ["in_progress", "cancelling"];

export interface BatchServiceDeps {
  store: JobStore;
  clock: Clock;
  log: Logger;
  rules: LineRules;
  /** New lines are waiting (wakes the runner). */
  onEnqueued(): void;
  /** A batch is being cancelled: lines held in memory that have not started must go. */
  onCancelled(batchId: string): void;
}

const COMPLETION_WINDOW_S = 24 * 3600;

function newId(prefix: string): string {
  return `${prefix}${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

/** A line's job id: its batch and its place in the input file. */
export function lineJobId(batchId: string, index: number): string {
  return `${batchId}-${index}`;
}

function lineJobIds(batch: BatchObject): string[] {
  return Array.from({ length: batch.request_counts.total }, (_, i) => lineJobId(batch.id, i));
}

/** Whether every line of a batch of `total` lines reached a final state. */
export function allLinesFinal(counts: GroupCounts, total: number): boolean {
  return counts.done + counts.failed + counts.cancelled >= total;
}

/** OpenAI's `request_counts` from the store's counts. */
function requestCounts(total: number, counts: GroupCounts): BatchObject["request_counts"] {
  return { total, completed: counts.done, failed: counts.failed };
}

/**
 * Lane order: batches in creation order, lines in file order. Kept below 10^14 so it
 * survives Redis Lua's JSON encoding (14 significant digits) until the 2050s.
 */
function laneOrder(createdAtS: number, index: number): number {
  return (createdAtS - 1_700_000_000) * 100_000 + index;
}

export class BatchService {
  readonly #deps: BatchServiceDeps;

  constructor(deps: BatchServiceDeps) {
    this.#deps = deps;
  }

  /**
   * Stores an uploaded file after checking every line.
   * @throws {ApiError} 400 with line-numbered problems; 413 over `batch.max_file_size`.
   */
  async uploadFile(filename: string, purpose: string, bytes: Uint8Array): Promise<FileObject> {
    if (purpose !== "batch") {
      throw invalidRequest(
        "invalid_purpose",
        `purpose must be "batch" (the only kind of file this proxy keeps), got '${purpose}'`,
        "purpose",
      );
    }
    parseBatchFile(bytes, this.#deps.rules);
    return await this.#saveFile(newId("file-"), filename, "batch", bytes);
  }

  async getFile(id: string): Promise<FileObject> {
    const doc = await this.#deps.store.getDoc<FileObject>("file", id);
    if (doc === null) throw resourceNotFound("file", id);
    return doc.value;
  }

  async fileContent(id: string): Promise<Uint8Array> {
    await this.getFile(id);
    return await this.#contents(id);
  }

  async #contents(id: string): Promise<Uint8Array> {
    const bytes = await this.#deps.store.getBlob(id);
    if (bytes === null) throw resourceNotFound("file", id);
    return bytes;
  }

  async listFiles(limit: number, after?: string): Promise<FileObject[]> {
    return await this.#deps.store.listDocs<FileObject>("file", limit, after);
  }

  async deleteFile(id: string): Promise<{ id: string; object: "file"; deleted: true }> {
    await this.getFile(id);
    await this.#deps.store.deleteBlob(id);
    await this.#deps.store.deleteDoc("file", id);
    return { id, object: "file", deleted: true };
  }

  /**
   * Creates a batch and queues its lines.
   * @throws {ApiError} 400 on a bad endpoint, window or file; 404 for an unknown file.
   */
  async createBatch(request: {
    input_file_id: string;
    endpoint: string;
    completion_window: string;
    metadata?: Record<string, string> | null;
  }): Promise<BatchObject> {
    const { store, clock } = this.#deps;
    if (!BATCH_ENDPOINTS.includes(request.endpoint)) {
      throw invalidRequest(
        "invalid_value",
        `endpoint must be one of ${BATCH_ENDPOINTS.join(", ")}`,
        "endpoint",
      );
    }
    if (request.completion_window !== "24h") {
      throw invalidRequest("invalid_value", `completion_window must be "24h"`, "completion_window");
    }
    const file = await this.getFile(request.input_file_id);
    if (file.purpose !== "batch") {
      throw invalidRequest("invalid_value", "input_file_id must be a file with purpose batch");
    }
    const lines = parseBatchFile(await this.#contents(file.id), this.#deps.rules);
    const wrong = lines.findIndex((line) => line.url !== request.endpoint);
    if (wrong >= 0) {
      throw invalidRequest(
        "invalid_batch_file",
        `Request '${lines[wrong].customId}' is for ${
          lines[wrong].url
        }, but the batch endpoint is ${request.endpoint}`,
        "endpoint",
      );
    }
    const now = clock.now();
    const createdAt = Math.floor(now / 1000);
    const batch: BatchObject = {
      id: newId("batch_"),
      object: "batch",
      endpoint: request.endpoint,
      errors: null,
      input_file_id: file.id,
      completion_window: "24h",
      status: "in_progress",
      output_file_id: null,
      error_file_id: null,
      created_at: createdAt,
      in_progress_at: createdAt,
      expires_at: createdAt + COMPLETION_WINDOW_S,
      finalizing_at: null,
      completed_at: null,
      failed_at: null,
      expired_at: null,
      cancelling_at: null,
      cancelled_at: null,
      request_counts: { total: lines.length, completed: 0, failed: 0 },
      metadata: request.metadata ?? null,
    };
    const jobs = lines.map((line, index): NewAsyncJob => ({
      id: lineJobId(batch.id, index),
      model: line.model,
      priority: "batch",
      lane: line.model,
      order: laneOrder(createdAt, index),
      group: batch.id,
      payload: JSON.stringify({ custom_id: line.customId, url: line.url, body: line.body }),
    }));
    // The document first: a line never runs for a batch nobody can see.
    await store.createDoc("batch", batch.id, batch, now);
    await store.enqueue(jobs, now);
    this.#deps.log.info("batch_created", { id: batch.id, lines: lines.length });
    this.#deps.onEnqueued();
    return batch;
  }

  /** The batch with its counts as of now. */
  async getBatch(id: string): Promise<BatchObject> {
    const doc = await this.#deps.store.getDoc<BatchObject>("batch", id);
    if (doc === null) throw resourceNotFound("batch", id);
    return await this.#withCounts(doc.value);
  }

  async listBatches(limit: number, after?: string): Promise<BatchObject[]> {
    const batches = await this.#deps.store.listDocs<BatchObject>("batch", limit, after);
    return await Promise.all(batches.map((batch) => this.#withCounts(batch)));
  }

  /** Stops a batch: queued lines are cancelled, running ones finish, then it is finalized. */
  async cancelBatch(id: string): Promise<BatchObject> {
    const { store, clock } = this.#deps;
    while (true) {
      const doc = await store.getDoc<BatchObject>("batch", id);
      if (doc === null) throw resourceNotFound("batch", id);
      const batch = doc.value;
      if (batch.status !== "in_progress") {
        if (batch.status === "cancelling" || batch.status === "cancelled") {
          return await this.#withCounts(batch);
        }
        throw invalidRequest(
          "invalid_state",
          `Batch '${id}' is ${batch.status} and cannot be cancelled`,
        );
      }
      const cancelling = {
        ...batch,
        status: "cancelling" as const,
        cancelling_at: Math.floor(clock.now() / 1000),
      };
      if (!await store.replaceDoc("batch", id, doc.version, cancelling)) continue;
      await store.cancelQueued(lineJobIds(batch), clock.now());
      this.#deps.onCancelled(id);
      await this.settle(id);
      return await this.getBatch(id);
    }
  }

  /** The stored batch (counts not refreshed), or null. */
  async find(id: string): Promise<BatchObject | null> {
    return (await this.#deps.store.getDoc<BatchObject>("batch", id))?.value ?? null;
  }

  /** Open batches (newest first), for the runner's periodic check. */
  async openBatches(): Promise<BatchObject[]> {
    const all = await this.#deps.store.listDocs<BatchObject>("batch", 1000);
    return all.filter((batch) => OPEN_STATUSES.includes(batch.status));
  }

  /**
   * Finalizes the batch if all its lines are final; otherwise does nothing. Safe to call
   * any number of times from any node.
   */
  async settle(id: string): Promise<void> {
    const { store, clock } = this.#deps;
    const doc = await store.getDoc<BatchObject>("batch", id);
    if (doc === null || !OPEN_STATUSES.includes(doc.value.status)) return;
    const batch = doc.value;
    const counts = await store.groupCounts(id);
    if (!allLinesFinal(counts, batch.request_counts.total)) return;

    const output: string[] = [];
    const errors: string[] = [];
    for (const job of await store.getMany(lineJobIds(batch))) {
      if (job === null || job.result === null || job.state === "cancelled") continue;
      if (job.state === "done") output.push(job.result);
      else errors.push(job.state === "dead" ? deadLine(job) : job.result);
    }
    const now = Math.floor(clock.now() / 1000);
    const file = async (suffix: string, lines: string[]) => {
      if (lines.length === 0) return null;
      const bytes = new TextEncoder().encode(lines.map((line) => `${line}\n`).join(""));
      const saved = await this.#saveFile(
        `file-${id}-${suffix}`,
        `${id}_${suffix}.jsonl`,
        "batch_output",
        bytes,
      );
      return saved.id;
    };
    const finished: BatchObject = {
      ...batch,
      status: batch.status === "cancelling" ? "cancelled" : "completed",
      output_file_id: await file("output", output),
      error_file_id: await file("errors", errors),
      finalizing_at: batch.finalizing_at ?? now,
      completed_at: batch.status === "cancelling" ? null : now,
      cancelled_at: batch.status === "cancelling" ? now : null,
      request_counts: requestCounts(batch.request_counts.total, counts),
    };
    if (await store.replaceDoc("batch", id, doc.version, finished)) {
      this.#deps.log.info("batch_finished", {
        id,
        status: finished.status,
        completed: counts.done,
        failed: counts.failed,
        cancelled: counts.cancelled,
      });
    }
  }

  async #saveFile(
    id: string,
    filename: string,
    purpose: FileObject["purpose"],
    bytes: Uint8Array,
  ): Promise<FileObject> {
    const { store, clock } = this.#deps;
    const file: FileObject = {
      id,
      object: "file",
      bytes: bytes.length,
      created_at: Math.floor(clock.now() / 1000),
      filename,
      purpose,
      status: "processed",
      status_details: null,
    };
    // Contents first: a listed file always has its bytes.
    await store.putBlob(id, bytes);
    if (!await store.createDoc("file", id, file, clock.now())) {
      return (await store.getDoc<FileObject>("file", id))!.value;
    }
    return file;
  }

  async #withCounts(batch: BatchObject): Promise<BatchObject> {
    if (!OPEN_STATUSES.includes(batch.status)) return batch;
    const counts = await this.#deps.store.groupCounts(batch.id);
    return {
      ...batch,
      request_counts: requestCounts(batch.request_counts.total, counts),
    };
  }
}

/**
 * A dead line as its error file has it. The store marks a line dead on its own when the nodes
 * that claimed it died `max_attempts` times, and writes only the error then: the line's id and
 * custom_id are added here, so the line can be matched to its input.
 */
function deadLine(job: JobRecord): string {
  const result = JSON.parse(job.result!);
  if ("custom_id" in result) return job.result!;
  const { custom_id } = JSON.parse(job.payload!) as LinePayload;
  return outputLine(`batch_req_${job.id}`, {
    customId: custom_id,
    response: null,
    error: result.error,
  });
}
