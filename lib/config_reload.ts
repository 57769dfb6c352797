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
 * A change is taken once the file looked the same at two looks this far apart, since editors
 * save in several steps (write, rename, chmod). Also how often the file is polled when it
 * cannot be watched (it is missing, or the system's inotify watches are used up).
 */
const SETTLE_MS = 500;

/**
 * A look at a watched file this often even without an event: a network file system, or a
 * bind mount whose host does not pass its changes on, gives none.
 */
const FALLBACK_POLL_MS = 30_000;

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
   * Reloads whenever `path` changes, until `signal` aborts. The file itself is watched, not its
   * directory: a directory watch woke the proxy for every write beside the file, such as its
   * own log when started with `> proxy.log` next to config.yml. And it is not polled: a stat
   * twice a second was half of an idle proxy's CPU on a VM where each wake costs milliseconds
   * (docs/performance.md). An editor that replaces the file leaves the watch on the old one,
   * so the watch is made anew after every event.
   */
  async watch(path: string, signal: AbortSignal): Promise<void> {
    const look = () => Deno.stat(path).then(versionOf, () => null);
    let loaded = await look();
    let lastText = await Deno.readTextFile(path).catch(() => "");
    while (!signal.aborted) {
      const watcher = watchFile(path);
      // Armed before this look, so that a change between the two is not missed.
      if (await look() === loaded) {
        await nextEvent(watcher, watcher === null ? SETTLE_MS : FALLBACK_POLL_MS, signal);
      }
      closeWatcher(watcher);
      let seen = await look();
      for (;;) {
        await pause(SETTLE_MS, signal);
        if (signal.aborted) return;
        const now = await look();
        if (now === seen) break;
        seen = now;
      }
      if (seen === null || seen === loaded) continue;
      loaded = seen;
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

/** An inotify watch on `path`; null when it cannot be had (no such file, no watches left). */
function watchFile(path: string): Deno.FsWatcher | null {
  try {
    return Deno.watchFs(path, { recursive: false });
  } catch {
    return null;
  }
}

function closeWatcher(watcher: Deno.FsWatcher | null): void {
  try {
    watcher?.close();
  } catch {
    // closed already
  }
}

/** Resolves at `watcher`'s next event, after `ms`, or when `signal` aborts. */
async function nextEvent(
  watcher: Deno.FsWatcher | null,
  ms: number,
  signal: AbortSignal,
): Promise<void> {
  if (watcher === null) return pause(ms, signal);
  const stop = () => closeWatcher(watcher);
  const timer = setTimeout(stop, ms);
  Deno.unrefTimer(timer);
  signal.addEventListener("abort", stop, { once: true });
  try {
    await watcher[Symbol.asyncIterator]().next();
  } catch {
    // closed by the timer or the abort
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", stop);
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
