/**
 * @module
 * config.yml's `models:` resolved: top-level defaults filled in, the kv_cache dir made absolute
 * and mounted, and the checks no single model's schema can make (ids and aliases used twice,
 * shared container names, memory against memory_budget).
 */
import type { ParsedConfig } from "./config_schema.ts";
import type { ModelConfig } from "./config_types.ts";
import type { LineLocator } from "./yaml_problems.ts";

/** Where the container sees `kv_cache.dir` (its `--slot-save-path`). */
export const KV_CACHE_MOUNT = "/kv-cache/";

/** The models in file order; each problem found is added to `problems` with its line. */
export function resolveModels(
  raw: ParsedConfig,
  problems: string[],
  lineOf: LineLocator,
  workingDir: string,
): ModelConfig[] {
  const owners = new Map<string, string>();
  const containers = new Map<string, string>();
  const models: ModelConfig[] = [];
  for (const [id, model] of Object.entries(raw.models)) {
    for (const name of [id, ...model.aliases]) {
      const owner = owners.get(name);
      if (owner !== undefined && !(owner === id && name === id)) {
        const line = lineOf(["models", id, "aliases"]);
        problems.push(`models.${id}.aliases (line ${line}): '${name}' is already used by ${owner}`);
      }
      owners.set(name, id);
    }
    const sharing = containers.get(model.container_name);
    if (sharing !== undefined) {
      const line = lineOf(["models", id, "container_name"]);
      problems.push(
        `models.${id}.container_name (line ${line}): '${model.container_name}' is already used by ${sharing}`,
      );
    }
    containers.set(model.container_name, id);
    const kvCache = model.kv_cache;
    // A relative dir is under the working directory (data/kv-cache: where `deno task start`
    // may write); Docker needs it absolute.
    const kvDir = kvCache?.save && kvCache.dir !== undefined
      ? decodeURIComponent(new URL(kvCache.dir, `file://${workingDir}/`).pathname).replace(
        /\/+$/,
        "",
      )
      : undefined;
    if (kvDir !== undefined && model.container === undefined) {
      const line = lineOf(["models", id, "kv_cache", "dir"]);
      problems.push(
        `models.${id}.kv_cache.dir (line ${line}): needs a container: block to mount it; for a container you created, start llama-server with --slot-save-path and leave dir out`,
      );
    }
    if (raw.memory_budget !== undefined) {
      const line = lineOf(["models", id]);
      if (model.memory === undefined) {
        problems.push(
          `models.${id}.memory (line ${line}): required when memory_budget is set (GB its container takes)`,
        );
      } else if (model.memory > raw.memory_budget) {
        problems.push(
          `models.${id}.memory (line ${line}): ${model.memory} GB is more than memory_budget (${raw.memory_budget} GB)`,
        );
      }
    }
    models.push({
      id,
      containerName: model.container_name,
      backendUrl: model.backend_url.replace(/\/+$/, ""),
      healthUrl: model.health_url ?? `${new URL(model.backend_url).origin}/health`,
      startupTimeoutMs: model.startup_timeout * 1000,
      aliases: model.aliases,
      maxWaitMs: (model.max_wait ?? raw.scheduler.max_wait) * 1000,
      onDisconnect: model.on_disconnect,
      ttlMs: model.ttl === undefined ? null : model.ttl * 1000,
      loadTimeHintMs: (model.load_time ?? model.startup_timeout) * 1000,
      waitFeedback: model.wait_feedback,
      memoryGb: model.memory ?? null,
      parallel: model.parallel ?? raw.num_workers,
      kvCache: kvCache?.save
        ? {
          dir: kvDir ?? null,
          maxBytes: kvCache.max_bytes,
          saveTimeoutMs: kvCache.save_timeout * 1000,
          restoreTimeoutMs: kvCache.restore_timeout * 1000,
        }
        : null,
      container: model.container === undefined ? null : {
        image: model.container.image,
        // With a kv_cache dir, llama-server saves its slots where the proxy can see them.
        command: kvDir === undefined
          ? model.container.command
          : [...model.container.command, "--slot-save-path", KV_CACHE_MOUNT],
        entrypoint: model.container.entrypoint ?? null,
        ports: model.container.ports,
        volumes: kvDir === undefined
          ? model.container.volumes
          : [...model.container.volumes, `${kvDir}:${KV_CACHE_MOUNT.slice(0, -1)}`],
        devices: model.container.devices,
        env: model.container.env,
        gpus: model.container.gpus ?? null,
        groupAdd: model.container.group_add,
        labels: model.container.labels,
      },
    });
  }
  return models;
}
