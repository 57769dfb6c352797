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

/**
 * How often the watch looks at the file. A change is taken once the file looked the same at two
 * looks in a row, since editors save in several steps (write, rename, chmod).
 */
const POLL_MS = 500;

/** What tells one version of the file from another without reading it. */
function versionOf(info: Deno.FileInfo): string {
  return `${info.ino}:${info.size}:${info.mtime?.getTime()}`;
}

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
   * Reloads whenever `path` changes, until `signal` aborts. The file is polled (a stat every
   * POLL_MS), not watched: a watch is on the directory, since many editors replace the file
   * rather than write into it, and woke the proxy for every write beside the file, such as its
   * own log when started with `> proxy.log` next to config.yml (several syscalls per line).
   */
  async watch(path: string, signal: AbortSignal): Promise<void> {
    const look = () => Deno.stat(path).then(versionOf, () => null);
    let loaded = await look();
    let lastText = await Deno.readTextFile(path).catch(() => "");
    let seen = loaded;
    while (!signal.aborted) {
      await pause(POLL_MS, signal);
      const now = await look();
      const settled = now === seen;
      seen = now;
      if (now === null || now === loaded || !settled) continue;
      loaded = now;
      // Saving without a change: nothing to do.
      const text = await Deno.readTextFile(path).catch(() => null);
      if (text === null || text === lastText) continue;
      lastText = text;
      // An unexpected error is logged: the watch goes on.
      await this.reload("file").catch((err) =>
        this.#deps.log.error("config_reload_failed", { trigger: "file", error: messageOf(err) })
      );
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

/** Resolves after `ms`, or at once when `signal` aborts; never keeps the process alive. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    Deno.unrefTimer(timer);
    signal.addEventListener("abort", done, { once: true });
  });
}
