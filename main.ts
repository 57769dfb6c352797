/**
 * LLM Queue Proxy: wiring only. Loads config.yml, builds the Docker client, swap manager,
 * dispatcher, cluster and routes, serves them, reconciles with Docker, and drains on
 * SIGTERM/SIGINT.
 *
 * Over 350 lines on purpose: every piece is built here, in the order they depend on each
 * other, and taken down in the reverse order, which reads best in one place.
 */
import { messageOf } from "./lib/errors.ts";
import { type Clock, systemClock } from "./lib/clock.ts";
import { LiveConfig } from "./lib/live_config.ts";
import { ConfigReloader, type ReloadResult } from "./lib/config_reload.ts";
import { ConfigError, loadConfig } from "./lib/config.ts";
import type { ConfigEnv } from "./lib/config_env.ts";
import type { Config } from "./lib/config_types.ts";
import { DockerApi, dockerForContainers } from "./lib/docker.ts";
import { consoleLogger, type Logger } from "./lib/log.ts";
import { Metrics } from "./lib/metrics.ts";
import { Activity } from "./lib/activity.ts";
import { SwapManager } from "./lib/swap_manager.ts";
import { sharedEndpoints } from "./lib/placement.ts";
import { SlotKeeper } from "./lib/kv_slots.ts";
import { Dispatcher } from "./lib/dispatcher.ts";
import { BackendClient } from "./lib/backend_client.ts";
import { SyncJournal } from "./lib/journal.ts";
import { openStore } from "./lib/store/open.ts";
import { StoreInUseError } from "./lib/store/file_lock.ts";
import { StoreStatus } from "./lib/store/status.ts";
import { StoreUpkeep } from "./lib/store/upkeep.ts";
import { BatchService } from "./lib/batch/service.ts";
import { BatchRunner } from "./lib/batch/runner.ts";
import { serveHttp } from "./lib/http_server.ts";
import { Cluster } from "./lib/cluster/cluster.ts";
import { NodeBoard } from "./lib/cluster/node_board.ts";
import { selfStatus } from "./lib/cluster/self_status.ts";
import { createApp } from "./routes/app.ts";

export interface RunningProxy {
  /** Base URL the proxy listens on, e.g. `http://127.0.0.1:8888`. */
  url: string;
  models: SwapManager;
  dispatcher: Dispatcher;
  /** Resolves once start-up reconcile with Docker finished. */
  reconciled: Promise<void>;
  /** Resolves once every job state so far is written to the store. */
  storeSettled(): Promise<void>;
  /** Reloads the config file (SIGHUP); null without one. */
  reload: ((trigger: string) => Promise<ReloadResult>) | null;
  /**
   * Stops accepting, fails waiting jobs with 503, lets in-flight ones finish within graceMs
   * (default: shutdown_grace).
   */
  close(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  clock?: Clock;
  /** How often a model still loading is logged (default 10 s). */
  loadProgressMs?: number;
  /** The file `config` came from: reloaded on `reload()` and whenever it changes. */
  configFile?: { path: string; env: ConfigEnv };
}

export async function startProxy(
  config: Config,
  options: StartOptions = {},
): Promise<RunningProxy> {
  const log = options.log ?? consoleLogger();
  const clock = options.clock ?? systemClock;
  const api = new DockerApi(config.dockerSocket);
  const docker = dockerForContainers(api, config.models.map((m) => m.containerName));
  const activity = new Activity();
  const live = await LiveConfig.create(config);
  const metrics = new Metrics(clock);

  // This process's name in the store: its lease, and the owner of its jobs.
  const node = `lqp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const store = await openStore(config.store);
  const slots = new SlotKeeper({ store, log, metrics, now: () => clock.now() });
  const models = new SwapManager(docker, config.models, {
    activity,
    clock,
    log,
    stopTimeoutS: config.stopTimeoutS,
    loadProgressMs: options.loadProgressMs,
    memoryBudgetGb: config.memoryBudgetGb,
    slots,
  });
  const storeStatus = new StoreStatus(store, log);
  const journal = new SyncJournal({ store, status: storeStatus, node, clock, log });
  const backends = new BackendClient();
  const dispatcher = new Dispatcher({
    config,
    models,
    metrics,
    log,
    clock,
    journal,
    storeStatus,
    activity,
    backends,
  });
  const batches = new BatchService({
    store,
    clock,
    log,
    // Read when a file is checked, so a reload applies to the next upload.
    rules: {
      get maxLines() {
        return live.current.batch.maxLines;
      },
      get maxMessages() {
        return live.current.maxMessages;
      },
      get maxJsonDepth() {
        return live.current.maxJsonDepth;
      },
      resolveModel: (name) => live.model(name)?.id ?? null,
    },
    onEnqueued: () => runner.wake(),
    onCancelled: (batchId) => runner.cancelGroup(batchId),
  });
  const runner = new BatchRunner({
    store,
    status: storeStatus,
    dispatcher,
    models,
    service: batches,
    node,
    clock,
    log,
    lanes: () => live.current.models.map((m) => m.id),
    peerHas: (model) => cluster?.peerHas(model) ?? false,
    // Enough lines in memory that workers never wait for the store between two lines.
    window: Math.max(8, config.numWorkers * 4),
    requestTimeoutMs: () => live.current.requestTimeoutMs,
  });
  // Only on a shared Redis store, which config parsing made sure of.
  const cluster = config.cluster === null ? null : new Cluster({
    config: config.cluster,
    board: new NodeBoard({
      url: config.store.url!,
      token: config.store.token!,
      prefix: config.store.prefix,
      timeoutMs: Math.min(2000, config.cluster.leaseMs / 2),
    }),
    clock,
    log,
    status: (only) => selfStatus(live.current, models, dispatcher, only ?? null),
  });
  const upkeep = new StoreUpkeep({
    store,
    status: storeStatus,
    node,
    clock,
    log,
    leaseMs: config.store.leaseMs,
    maxAttempts: config.maxAttempts,
    retention: { finishedMs: config.store.retentionMs, deadMs: config.store.deadRetentionMs },
    onRequeued: () => runner.wake(),
  });
  // Our lease exists before our first job does, and jobs of a dead predecessor are settled.
  await upkeep.start();
  const closing = new AbortController();
  const configFile = options.configFile;
  const reloader = configFile === undefined ? null : new ConfigReloader({
    live,
    log,
    load: () => loadConfig(configFile.path, configFile.env),
    apply(next, commit) {
      // All at once, before any request can see a mix of old and new.
      commit();
      dispatcher.reconfigure(next);
      // A removed model is unloaded once its requests finished: not something to wait for.
      models.reconfigure(next.models, next.memoryBudgetGb).then(() => models.createMissing()).catch(
        (err) =>
          log.warn("config_apply_failed", {
            error: messageOf(err),
          }),
      );
      runner.wake();
    },
  });
  const app = createApp({
    live,
    docker,
    models,
    dispatcher,
    metrics,
    log,
    clock,
    store,
    storeStatus,
    batches,
    activity,
    cluster,
    closing: closing.signal,
    reload: reloader === null ? null : (trigger) => reloader.reload(trigger),
  });

  const server = await serveHttp(app, {
    hostname: config.host,
    port: config.port,
    log,
    ...config.connections,
    stats: metrics.connections,
  }).catch(async (err) => {
    // Nothing listens (a port taken): give the store back, its KV file's lock with it, so a
    // start on another port in this process can have it.
    await closeStore();
    throw err;
  });
  const host = server.hostname === "0.0.0.0" ? "127.0.0.1" : server.hostname;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${server.port}`;

  log.info("listening", {
    url: `http://${config.host}:${server.port}/v1`,
    dashboard: `${url}/dashboard`,
    models: config.models.length,
    num_workers: config.numWorkers,
    queue_size: config.queueSize,
    store: config.store.type === "kv" ? `kv ${config.store.path}` : config.store.type,
  });
  if (live.keys.open) {
    log.warn("no_api_keys", {
      note: "no API keys are configured: anyone who can reach this port can use the models",
    });
  } else {
    log.info("api_keys", { configured: config.apiKeys.length });
  }
  logResidency(config, log);
  // Peers are told about this node once it answers on its port.
  await cluster?.start();
  if (cluster !== null) {
    log.info("cluster_joined", { node: cluster.node, peers: cluster.peers().length });
  }
  const reconciled = models.reconcile().then(async () => {
    await models.createMissing();
    if (config.preload === null || models.snapshot().loaded !== null) return;
    await models.place(config.preload, "preload").catch((err) =>
      log.warn("preload_failed", { model: config.preload, error: String(err) })
    );
  });
  runner.start();
  const stopWatching = new AbortController();
  const watching = reconciled.then(() => models.watch(stopWatching.signal));
  const watchingConfig = reloader === null || configFile === undefined
    ? Promise.resolve()
    : reloader.watch(configFile.path, stopWatching.signal).catch((err) =>
      log.warn("config_watch_failed", {
        path: configFile.path,
        error: messageOf(err),
        note: "send SIGHUP to reload",
      })
    );

  let closed: Promise<void> | undefined;
  return {
    url,
    models,
    dispatcher,
    reconciled,
    storeSettled: () => journal.settled(),
    reload: reloader === null ? null : (trigger) => reloader.reload(trigger),
    close(graceMs = live.current.shutdownGraceMs) {
      // A second call (a second signal) waits for the first shutdown instead of repeating it.
      return closed ??= shutdown(graceMs);
    },
  };

  async function shutdown(graceMs: number): Promise<void> {
    // Peers stop routing here first.
    await cluster?.close();
    // Batch lines not started yet go back to the store for the next start.
    await runner.close();
    const drained = await dispatcher.shutdown(graceMs);
    if (!drained) log.warn("shutdown_grace_expired", { grace_ms: graceMs });
    closing.abort();
    await server.shutdown();
    backends.close();
    models.close();
    stopWatching.abort();
    await reconciled;
    await watching;
    await watchingConfig;
    await journal.settled();
    await closeStore();
  }

  /** The store and what keeps it (its upkeep, the reachability pings), and the Docker client. */
  async function closeStore(): Promise<void> {
    await upkeep.close();
    storeStatus.close();
    await store.close();
    api.close();
  }
}

/** Says how many models may run at once, and which never can together (a shared port). */
function logResidency(config: Config, log: Logger): void {
  if (config.memoryBudgetGb === null) return;
  log.info("memory_budget", {
    gb: config.memoryBudgetGb,
    declared: config.models.map((m) => `${m.id}=${m.memoryGb}`).join(","),
  });
  for (const [endpoint, ids] of sharedEndpoints(config.models)) {
    log.warn("models_share_a_port", {
      endpoint,
      models: ids.join(","),
      note: "they never run together; give each its own port to let them stay resident at once",
    });
  }
}

function configPathFromArgs(args: string[], env: string | undefined): string {
  const index = args.findIndex((a) => a === "--config" || a.startsWith("--config="));
  if (index >= 0) {
    const arg = args[index];
    const value = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : args[index + 1];
    if (value) return value;
  }
  return env || "config.yml";
}

/** A bad config, or a KV file another proxy holds: said in a line or a few, exit code 2. */
function exitOnStartProblem(err: unknown): never {
  if (err instanceof ConfigError || err instanceof StoreInUseError) {
    console.error(err.message);
    Deno.exit(2);
  }
  throw err;
}

async function main(): Promise<void> {
  const env = (name: string) => Deno.env.get(name);
  const path = configPathFromArgs(Deno.args, env("LQP_CONFIG"));
  const configEnv: ConfigEnv = {
    NUM_WORKERS: env("NUM_WORKERS"),
    LQP_HOST: env("LQP_HOST"),
    LQP_PORT: env("LQP_PORT"),
    DOCKER_SOCKET: env("DOCKER_SOCKET"),
    LOG_FORMAT: env("LOG_FORMAT"),
    LQP_STORE: env("LQP_STORE"),
    UPSTASH_REDIS_REST_URL: env("UPSTASH_REDIS_REST_URL"),
    UPSTASH_REDIS_REST_TOKEN: env("UPSTASH_REDIS_REST_TOKEN"),
  };
  const config = await loadConfig(path, configEnv).catch(exitOnStartProblem);
  const log = consoleLogger(config.logFormat);
  const proxy = await startProxy(config, { log, configFile: { path, env: configEnv } })
    .catch(exitOnStartProblem);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutdown", { signal });
    await proxy.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGHUP", () => {
    proxy.reload?.("SIGHUP").catch((err) =>
      log.error("config_reload_failed", {
        trigger: "SIGHUP",
        error: messageOf(err),
      })
    );
  });
}

if (import.meta.main) await main();
