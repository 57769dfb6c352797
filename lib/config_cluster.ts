/**
 * @module
 * config.yml's `cluster:` resolved: only on a shared Redis store, with the shared secret read
 * from its file.
 */
import type { ParsedConfig } from "./config_schema.ts";
import type { KeyFileReader } from "./config_api_keys.ts";
import type { ClusterConfig } from "./config_types.ts";
import { messageOf } from "./errors.ts";
import type { LineLocator } from "./yaml_problems.ts";

const MIN_SECRET = 16;

export function resolveCluster(
  raw: ParsedConfig,
  readFile: KeyFileReader,
  problems: string[],
  lineOf: LineLocator,
): ClusterConfig | null {
  const cluster = raw.cluster;
  if (cluster === undefined) return null;
  if (raw.store.type !== "redis") {
    problems.push(
      `cluster (line ${lineOf(["cluster"])}): a cluster needs store.type: redis, which every ` +
        `node shares (store.type is ${raw.store.type}, which only this process sees)`,
    );
  }
  if (cluster.lease < 2 * cluster.heartbeat) {
    problems.push(
      `cluster.lease (line ${lineOf(["cluster", "lease"])}): expected at least twice ` +
        `cluster.heartbeat (${cluster.heartbeat}s), so that one late heartbeat does not drop a node`,
    );
  }
  let secret = "";
  const at = `cluster.secret_file (line ${lineOf(["cluster", "secret_file"])})`;
  try {
    secret = readFile(cluster.secret_file).trim();
    if (secret.length < MIN_SECRET) {
      problems.push(`${at}: expected a secret of at least ${MIN_SECRET} characters`);
    }
  } catch (err) {
    problems.push(`${at}: cannot read ${cluster.secret_file} (${messageOf(err)})`);
  }
  return {
    node: cluster.node,
    advertiseUrl: cluster.advertise_url.replace(/\/+$/, ""),
    secret,
    heartbeatMs: cluster.heartbeat * 1000,
    leaseMs: cluster.lease * 1000,
  };
}
