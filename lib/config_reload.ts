/**
 * @module
 * Reloading config.yml while the proxy runs: on SIGHUP, on a change to the file, or from
 * `POST /admin/reload`. A file that does not parse is rejected with the same problems a start
 * would print, and the config in force stays. Reloads run one at a time.
 */
import { messageOf } from "./errors.ts";
import { ConfigError } from "./config.ts";
import type { Config } from "./config_types.ts";
import { type ConfigChanges, type LiveConfig, nothingChanged, planReload } from "./live_config.ts";
import type { Logger } from "./log.ts";

export type ReloadResult =
  | { ok: true; changes: ConfigChanges }
  | { ok: false; problems: readonly string[] };

export interface ConfigReloaderDeps {
  live: LiveConfig;
  /** Reads and parses the file. @throws {ConfigError} */
  load(): Promise<Config>;
  /**
   * Moves the running parts to `config`. `commit` puts it in force for readers of
   * `live.current`; call it synchronously with the other switches.
   */
  apply(config: Config, commit: () => void): void;
  log: Logger;
}

/** Editors save in several steps (write, rename, chmod): wait for the burst to end. */
const SETTLE_MS = 250;

export class ConfigReloader {
  readonly #deps: ConfigReloaderDeps;
  #chain: Promise<unknown> = Promise.resolve();

  constructor(deps: ConfigReloaderDeps) {
    this.#deps = deps;
  }

  /** Loads the file and puts it in force, or says why not. `trigger` is for the log. */
  reload(trigger: string): Promise<ReloadResult> {
    const run = this.#chain.then(() => this.#reload(trigger));
    this.#chain = run.catch(() => {});
    return run;
  }

  /**
   * Reloads whenever `path` changes, until `signal` aborts. Watches the directory, since
   * many editors replace the file rather than write into it.
   */
  async watch(path: string, signal: AbortSignal): Promise<void> {
    const absolute = await Deno.realPath(path);
    const dir = absolute.slice(0, absolute.lastIndexOf("/")) || "/";
    const watcher = Deno.watchFs(dir, { recursive: false });
    signal.addEventListener("abort", () => watcher.close(), { once: true });
    let timer: ReturnType<typeof setTimeout> | null = null;
    let lastText = await Deno.readTextFile(absolute).catch(() => "");
    try {
      for await (const event of watcher) {
        if (!event.paths.some((p) => p === absolute)) continue;
        if (timer !== null) clearTimeout(timer);
        timer = setTimeout(async () => {
          timer = null;
          // Saving without a change, or a half-written file's second event: nothing to do.
          const text = await Deno.readTextFile(absolute).catch(() => null);
          if (text === null || text === lastText) return;
          lastText = text;
          // Nobody awaits a timer: an unexpected error is logged, not left to end the process.
          await this.reload("file").catch((err) =>
            this.#deps.log.error("config_reload_failed", {
              trigger: "file",
              error: messageOf(err),
            })
          );
        }, SETTLE_MS);
      }
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }

  async #reload(trigger: string): Promise<ReloadResult> {
    const { live, log } = this.#deps;
    let next: Config;
    try {
      next = await this.#deps.load();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      log.error("config_rejected", {
        trigger,
        problems: err.problems.join("; "),
        note: "the config in force stays",
      });
      return { ok: false, problems: err.problems };
    }
    const { config, changes } = planReload(live.current, next);
    if (changes.restartNeeded.length > 0) {
      log.warn("config_restart_needed", {
        keys: changes.restartNeeded.join(","),
        note: "these keep their old values until the proxy restarts",
      });
    }
    const commit = await live.prepare(config);
    this.#deps.apply(config, commit);
    log.info("config_reloaded", {
      trigger,
      changes: nothingChanged(changes) ? "none" : undefined,
      added: changes.added.join(",") || undefined,
      removed: changes.removed.join(",") || undefined,
      changed: changes.changed.join(",") || undefined,
      settings: changes.settings.join(",") || undefined,
    });
    return { ok: true, changes };
  }
}
