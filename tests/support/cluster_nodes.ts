/**
 * @module
 * Two proxy nodes as users run them: two processes on two ports, one real redis-server behind
 * the Upstash REST gateway that both use as their store and node board, and a homelab of
 * look-alike containers for each node (same model ids, distinct container names and ports,
 * one dockerd).
 */
import { freePort } from "../../demo/free_port.ts";
import { requireDocker } from "./docker_env.ts";
import { createHomelab, type FakeHomelab, type FakeModelSpec } from "./fake_models.ts";
import { getJson } from "./client.ts";
import { type ProxyProcess, runProxyProcess } from "./proxy_process.ts";
import { RedisStack } from "./stores.ts";
import { waitFor } from "./wait_for.ts";
import type { DockerApi } from "../../lib/docker.ts";

export const CLUSTER_SECRET = "the-test-cluster-secret-0123456789";

export interface ClusterNode {
  name: string;
  lab: FakeHomelab;
  port: number;
  url: string;
  /** Null while the node is down. */
  proc: ProxyProcess | null;
}

export interface TwoNodes {
  api: DockerApi;
  stack: RedisStack;
  nodes: [ClusterNode, ClusterNode];
  /** Starts node `i` (again), once it answers /health. */
  start(i: number): Promise<void>;
  /** SIGKILLs node `i` and waits for it to be gone. */
  kill(i: number): Promise<void>;
  /** Waits until every running node sees `count` live nodes. */
  seeEachOther(count: number): Promise<void>;
}

/** A node's config.yml: the lab's models, the shared store, and its cluster block. */
function nodeConfig(
  node: ClusterNode,
  stack: RedisStack,
  secretPath: string,
  extra: string,
  advertiseUrl: string,
): string {
  return node.lab.configYaml(
    [
      // Jobs of a killed node come back within seconds, not the default 15.
      stack.storeYaml(2),
      "cluster:",
      `  node: ${node.name}`,
      `  advertise_url: ${advertiseUrl}`,
      `  secret_file: ${secretPath}`,
      "  heartbeat: 0.2",
      "  lease: 1.5",
      extra,
    ].join("\n"),
  );
}

export async function withTwoNodes(
  specs: FakeModelSpec[],
  extra: string,
  fn: (cluster: TwoNodes) => Promise<void>,
  {
    advertise = [],
  }: {
    /** Where each node tells its peers to reach it, when not its own URL (a dead address). */
    advertise?: (string | undefined)[];
  } = {},
): Promise<void> {
  const api = await requireDocker();
  const dir = await Deno.makeTempDir({ prefix: "lqp-cluster-" });
  const secretPath = `${dir}/cluster.secret`;
  await Deno.writeTextFile(secretPath, CLUSTER_SECRET);
  const nodes: ClusterNode[] = [];
  let stack: RedisStack | null = null;
  try {
    stack = await RedisStack.start();
    const redis = stack;
    for (const name of ["node-1", "node-2"]) {
      const port = freePort();
      const lab = await createHomelab(api, specs);
      nodes.push({ name, lab, port, url: `http://127.0.0.1:${port}`, proc: null });
    }
    const start = async (i: number) => {
      const node = nodes[i];
      const config = nodeConfig(node, redis, secretPath, extra, advertise[i] ?? node.url);
      node.proc = await runProxyProcess(config, { port: node.port });
    };
    const cluster: TwoNodes = {
      api,
      stack: redis,
      nodes: nodes as [ClusterNode, ClusterNode],
      start,
      async kill(i) {
        // Disposing a node's process is a SIGKILL, waited for.
        await nodes[i].proc?.[Symbol.asyncDispose]();
        nodes[i].proc = null;
      },
      async seeEachOther(count) {
        for (const node of nodes.filter((n) => n.proc !== null)) {
          await waitFor(`${node.name} to see ${count} live nodes`, async () => {
            const health = (await getJson(`${node.url}/health`)).body;
            const seen = (health.cluster as { nodes: unknown[] } | undefined)?.nodes.length;
            return seen === count;
          });
        }
      },
    };
    await Promise.all([start(0), start(1)]);
    await cluster.seeEachOther(2);
    await fn(cluster);
  } finally {
    // The nodes stop before their store does.
    for (const node of nodes) {
      await node.proc?.[Symbol.asyncDispose]();
      await node.lab.remove();
    }
    await stack?.[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
    api.close();
  }
}
