/**
 * @module
 * Warm returns: before a model with `kv_cache.save` stops, each llama-server slot that holds
 * tokens is saved (`POST /slots/{id}?action=save`); when the model is healthy again, and
 * before any request reaches it, those files are restored into the same slots. What was saved
 * is recorded in the store. Nothing here can fail a swap: every step is bounded by its
 * timeout, and a failure is logged and the model goes on cold.
 *
 * Save files are named per model, build and slot (`lqp-<model>-<build>-slot<n>.bin`), the
 * build being a digest of the model id, the container's image id and its spec, so a file is
 * never restored into another model or another build.
 */
import { z } from "zod";
import type { ModelConfig } from "./config_types.ts";
import type { JobStore, Versioned } from "./store/contract.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { messageOf } from "./errors.ts";

/** One slot's save file, as recorded in the store. */
export interface SlotSave {
  slot: number;
  filename: string;
  tokens: number;
  bytes: number;
  savedAt: number;
}

/** The store's record of one model's last save. */
export interface SavedSlots {
  model: string;
  build: string;
  slots: SlotSave[];
}

/** What a save or a restore did, for the swap's log line and the dashboard. */
export interface KvOutcome {
  slots: number;
  tokens: number;
  bytes: number;
  ms: number;
}

export type KvStatus = "on" | "off" | "unsupported";

const SlotList = z.array(z.object({
  id: z.number().int().min(0),
  n_prompt_tokens: z.number().int().min(0).optional(),
}));
const Saved = z.object({ n_saved: z.number().int().min(0), n_written: z.number().int().min(0) });
const Restored = z.object({ n_restored: z.number().int().min(0) });

type DocStore = Pick<JobStore, "getDoc" | "createDoc" | "replaceDoc" | "deleteDoc">;

export interface SlotKeeperDeps {
  store: DocStore;
  log: Logger;
  metrics: Metrics;
  now: () => number;
}

export class SlotKeeper {
  readonly #deps: SlotKeeperDeps;
  /** Models whose server answered 501: started without `--slot-save-path`. */
  readonly #unsupported = new Set<string>();

  constructor(deps: SlotKeeperDeps) {
    this.#deps = deps;
  }

  status(model: ModelConfig): KvStatus {
    if (model.kvCache === null) return "off";
    return this.#unsupported.has(model.id) ? "unsupported" : "on";
  }

  /**
   * Saves every slot of `model` that holds tokens (its requests have drained), within
   * `kv_cache.save_timeout`. Returns what was saved, or null when nothing was.
   */
  async save(model: ModelConfig, build: string): Promise<KvOutcome | null> {
    const kv = model.kvCache;
    if (kv === null || this.#unsupported.has(model.id)) return null;
    const started = performance.now();
    const signal = AbortSignal.timeout(kv.saveTimeoutMs);
    const saves: SlotSave[] = [];
    try {
      const res = await fetch(`${slotsUrl(model)}`, { signal });
      if (!res.ok) throw new Error(`GET /slots answered ${res.status}`);
      const slots = SlotList.parse(await res.json()).filter((s) => (s.n_prompt_tokens ?? 0) > 0);
      for (const { id } of slots) {
        const filename = fileName(model.id, build, id);
        const answer = await fetch(`${slotsUrl(model)}/${id}?action=save`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ filename }),
          signal,
        });
        if (answer.status === 501) {
          await answer.body?.cancel();
          this.#unsupported.add(model.id);
          this.#deps.log.warn("kv_cache_unsupported", {
            model: model.id,
            note: "its llama-server was started without --slot-save-path; kv_cache is off for it",
          });
          return null;
        }
        if (!answer.ok) throw new Error(`saving slot ${id} answered ${answer.status}`);
        const saved = Saved.parse(await answer.json());
        saves.push({
          slot: id,
          filename,
          tokens: saved.n_saved,
          bytes: saved.n_written,
          savedAt: this.#deps.now(),
        });
      }
    } catch (err) {
      this.#deps.log.warn("kv_save_failed", {
        model: model.id,
        saved_slots: saves.length,
        error: messageOf(err),
      });
    }
    if (saves.length === 0) return null;
    await this.#record({ model: model.id, build, slots: saves });
    if (kv.dir !== null) await this.#keepWithinBudget(model, kv.dir, kv.maxBytes);
    const outcome = outcomeOf(saves, started);
    this.#deps.metrics.kvSavedTokens.inc({ model: model.id }, outcome.tokens);
    this.#deps.metrics.kvSaveSeconds.observe({ model: model.id }, outcome.ms / 1000);
    return outcome;
  }

  /**
   * Restores what the last save of `model` left, into the same slots, within
   * `kv_cache.restore_timeout`. A file of another build is never restored (it is deleted);
   * a file that fails to restore is deleted and its slot starts cold.
   */
  async restore(model: ModelConfig, build: string): Promise<KvOutcome | null> {
    const kv = model.kvCache;
    if (kv === null || this.#unsupported.has(model.id)) return null;
    const record = await this.#deps.store.getDoc<SavedSlots>("kv_save", model.id)
      .catch(() => null);
    if (record === null) return null;
    const saved = record.value;
    if (saved.build !== build) {
      this.#deps.log.info("kv_cache_stale", {
        model: model.id,
        note: "saved by another build of this model (image or container changed); starting cold",
      });
      await this.#removeFiles(model, saved.slots);
      await this.#deps.store.deleteDoc("kv_save", model.id).catch(() => {});
      return null;
    }
    const started = performance.now();
    const signal = AbortSignal.timeout(kv.restoreTimeoutMs);
    const restored: SlotSave[] = [];
    const failed: SlotSave[] = [];
    for (const save of saved.slots) {
      try {
        const answer = await fetch(`${slotsUrl(model)}/${save.slot}?action=restore`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ filename: save.filename }),
          signal,
        });
        const text = await answer.text();
        if (!answer.ok) throw new Error(`answered ${answer.status}: ${text.slice(0, 200)}`);
        restored.push({ ...save, tokens: Restored.parse(JSON.parse(text)).n_restored });
      } catch (err) {
        failed.push(save);
        this.#deps.log.warn("kv_restore_failed", {
          model: model.id,
          slot: save.slot,
          file: save.filename,
          error: messageOf(err),
        });
      }
    }
    if (failed.length > 0) {
      await this.#removeFiles(model, failed);
      await this.#keepOnly(record, saved.slots.filter((s) => !failed.includes(s)));
    }
    if (restored.length === 0) return null;
    const outcome = outcomeOf(restored, started);
    this.#deps.metrics.kvRestoredTokens.inc({ model: model.id }, outcome.tokens);
    this.#deps.metrics.kvRestoreSeconds.observe({ model: model.id }, outcome.ms / 1000);
    return outcome;
  }

  /** Replaces the store's record of a model's save. */
  async #record(saved: SavedSlots): Promise<void> {
    const { store } = this.#deps;
    try {
      const current = await store.getDoc<SavedSlots>("kv_save", saved.model);
      const written = current === null
        ? await store.createDoc("kv_save", saved.model, saved, this.#deps.now())
        : await store.replaceDoc("kv_save", saved.model, current.version, saved);
      if (!written) throw new Error("the record changed meanwhile");
    } catch (err) {
      this.#deps.log.warn("kv_record_failed", { model: saved.model, error: messageOf(err) });
    }
  }

  /** Rewrites a record read moments ago to list only `slots` (none left: it goes). */
  async #keepOnly(record: Versioned<SavedSlots>, slots: SlotSave[]): Promise<void> {
    const { store, log } = this.#deps;
    const model = record.value.model;
    try {
      if (slots.length === 0) return await store.deleteDoc("kv_save", model);
      const written = await store.replaceDoc("kv_save", model, record.version, {
        ...record.value,
        slots,
      });
      if (!written) throw new Error("the record changed meanwhile");
    } catch (err) {
      log.warn("kv_record_failed", { model, error: messageOf(err) });
    }
  }

  /** Deletes save files, where the proxy owns the directory. */
  async #removeFiles(model: ModelConfig, saves: readonly SlotSave[]): Promise<void> {
    const dir = model.kvCache?.dir ?? null;
    if (dir === null) return;
    for (const save of saves) await removeFile(`${dir}/${save.filename}`, this.#deps.log);
  }

  /** Deletes this model's oldest save files in `dir` until they fit in `maxBytes`. */
  async #keepWithinBudget(model: ModelConfig, dir: string, maxBytes: number): Promise<void> {
    const prefix = `lqp-${safeName(model.id)}-`;
    const files: { path: string; bytes: number; at: number }[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (!entry.isFile || !entry.name.startsWith(prefix)) continue;
        const path = `${dir}/${entry.name}`;
        const info = await Deno.stat(path);
        files.push({ path, bytes: info.size, at: info.mtime?.getTime() ?? 0 });
      }
    } catch (err) {
      this.#deps.log.warn("kv_dir_unreadable", { model: model.id, dir, error: messageOf(err) });
      return;
    }
    files.sort((a, b) => a.at - b.at);
    let total = files.reduce((sum, f) => sum + f.bytes, 0);
    for (const file of files) {
      if (total <= maxBytes) break;
      await removeFile(file.path, this.#deps.log);
      total -= file.bytes;
      this.#deps.log.info("kv_file_evicted", {
        model: model.id,
        file: file.path,
        bytes: file.bytes,
      });
    }
  }
}

/** The backend's `/slots` URL: llama-server serves it at its root, beside `/v1`. */
function slotsUrl(model: ModelConfig): string {
  return `${new URL(model.backendUrl).origin}/slots`;
}

function safeName(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]/g, "_");
}

function fileName(model: string, build: string, slot: number): string {
  return `lqp-${safeName(model)}-${build}-slot${slot}.bin`;
}

function outcomeOf(saves: readonly SlotSave[], started: number): KvOutcome {
  return {
    slots: saves.length,
    tokens: saves.reduce((sum, s) => sum + s.tokens, 0),
    bytes: saves.reduce((sum, s) => sum + s.bytes, 0),
    ms: Math.round(performance.now() - started),
  };
}

async function removeFile(path: string, log: Logger): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      log.warn("kv_file_remove_failed", { file: path, error: messageOf(err) });
    }
  }
}
