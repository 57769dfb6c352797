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
import { within } from "./wait_for.ts";

export interface TestProxy extends RunningProxy, AsyncDisposable {}

export interface TestProxyOptions {
  dockerSocket?: string;
  log?: Logger;
  loadProgressMs?: number;
  /** Write the config to this file and start from it, so it can be reloaded. */
  configFile?: string;
}

/** A test's config text as the proxy reads it: the test Docker socket, a memory store. */
export function testConfigText(configYaml: string, dockerSocket = DOCKER_SOCKET): string {
  // An in-memory store unless the test names one: nothing written under the source tree.
  const store = /^store:/m.test(configYaml) ? "" : "store:\n  type: memory\n";
  return `docker_socket: ${dockerSocket}\n${store}${configYaml}`;
}

export async function startTestProxy(
  configYaml: string,
  { dockerSocket = DOCKER_SOCKET, log = silentLogger, loadProgressMs, configFile }:
    TestProxyOptions = {},
): Promise<TestProxy> {
  const text = testConfigText(configYaml, dockerSocket);
  if (configFile !== undefined) await Deno.writeTextFile(configFile, text);
  const config = parseConfig(text, configFile ?? "test config");
  const proxy = await startProxy(config, {
    log,
    loadProgressMs,
    configFile: configFile === undefined ? undefined : { path: configFile, env: {} },
  });
  // A shutdown that hangs fails the test with this message instead of stalling the suite.
  const dispose = () => within("the proxy to shut down", proxy.close(2000), 30_000);
  return { ...proxy, [Symbol.asyncDispose]: dispose };
}

export interface HomelabContext {
  api: DockerApi;
  lab: FakeHomelab;
  proxy: TestProxy;
}

/**
 * Runs `fn` with a fresh homelab of look-alike containers and a proxy configured for it
 * (start-up reconcile finished), and removes everything afterwards, whatever happens.
 * `options` go to the proxy (a log to capture, a config file to reload).
 */
export async function withHomelabProxy(
  specs: FakeModelSpec[],
  configExtra: string,
  fn: (ctx: HomelabContext) => Promise<void>,
  options: TestProxyOptions = {},
): Promise<void> {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, specs);
    await using proxy = await startTestProxy(lab.configYaml(configExtra), options);
    await proxy.reconciled;
    await fn({ api, lab, proxy });
  } finally {
    api.close();
  }
}
