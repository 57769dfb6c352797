/**
 * @module
 * Starts the real proxy in-process (the same `startProxy()` main.ts uses) on a free port.
 */
import { parseConfig } from "../../lib/config.ts";
import { type Logger, silentLogger } from "../../lib/log.ts";
import { type RunningProxy, startProxy } from "../../main.ts";
import type { DockerApi } from "../../lib/docker.ts";
import { DOCKER_SOCKET, requireDocker } from "./docker_env.ts";
import { createHomelab, type FakeHomelab, type FakeModelSpec } from "./fake_models.ts";

export interface TestProxy extends RunningProxy, AsyncDisposable {}

export interface TestProxyOptions {
  dockerSocket?: string;
  log?: Logger;
  loadProgressMs?: number;
}

export async function startTestProxy(
  configYaml: string,
  { dockerSocket = DOCKER_SOCKET, log = silentLogger, loadProgressMs }: TestProxyOptions = {},
): Promise<TestProxy> {
  // An in-memory store unless the test names one: nothing written under the source tree.
  const store = /^store:/m.test(configYaml) ? "" : "store:\n  type: memory\n";
  const config = parseConfig(
    `docker_socket: ${dockerSocket}\n${store}${configYaml}`,
    "test config",
  );
  const proxy = await startProxy(config, { log, loadProgressMs });
  return { ...proxy, [Symbol.asyncDispose]: () => proxy.close(2000) };
}

/** Samples Docker until stopped; records the most containers of `running()` seen at once. */
export function sampleRunning(running: () => Promise<string[]>): {
  stop(): Promise<{ samples: number; maxRunning: number }>;
} {
  let stopped = false;
  let samples = 0;
  let maxRunning = 0;
  const loop = (async () => {
    while (!stopped) {
      const names = await running();
      samples++;
      maxRunning = Math.max(maxRunning, names.length);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { samples, maxRunning };
    },
  };
}

export interface HomelabContext {
  api: DockerApi;
  lab: FakeHomelab;
  proxy: TestProxy;
}

/**
 * Runs `fn` with a fresh homelab of look-alike containers and a proxy configured for it
 * (start-up reconcile finished), and removes everything afterwards, whatever happens.
 */
export async function withHomelabProxy(
  specs: FakeModelSpec[],
  configExtra: string,
  fn: (ctx: HomelabContext) => Promise<void>,
): Promise<void> {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, specs);
    await using proxy = await startTestProxy(lab.configYaml(configExtra));
    await proxy.reconciled;
    await fn({ api, lab, proxy });
  } finally {
    api.close();
  }
}
