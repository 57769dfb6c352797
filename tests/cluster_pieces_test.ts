/**
 * The cluster's pure pieces without services: `cluster:` in config.yml, the hop header's
 * signature, and where a request is routed (lib/cluster/router.ts) for each rule.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config.ts";
import { HopSigner } from "../lib/cluster/hop.ts";
import type { NodeStatus } from "../lib/cluster/node_board.ts";
import { route } from "../lib/cluster/router.ts";
import { problemsOf } from "./support/config_problems.ts";
import { parse as parseYaml } from "yaml";

const SECRET = "a-shared-cluster-secret-0123";
const MODELS = `models:
  a:
    container_name: a
    backend_url: http://localhost:8080/v1
`;
const REDIS = `store:
  type: redis
  url: http://127.0.0.1:8079
  token: t
`;
const CLUSTER = `cluster:
  node: gpu-1
  advertise_url: http://10.0.0.5:8888/
  secret_file: cluster.secret
`;
const files = (contents: Record<string, string>) => (path: string) => {
  if (!(path in contents)) throw new Error(`No such file: ${path}`);
  return contents[path];
};

Deno.test("config: cluster resolves its node, URL and secret file, with heartbeat and lease defaults", () => {
  const config = parseConfig(
    MODELS + REDIS + CLUSTER,
    "config.yml",
    {},
    files({ "cluster.secret": `${SECRET}\n` }),
  );
  assert.deepEqual(config.cluster, {
    node: "gpu-1",
    advertiseUrl: "http://10.0.0.5:8888",
    secret: SECRET,
    heartbeatMs: 1000,
    leaseMs: 5000,
  });
  assert.equal(parseConfig(MODELS, "config.yml").cluster, null);
});

Deno.test("config: a cluster on a store only this process sees, with a short or missing secret, or a lease under two heartbeats, is refused with lines", () => {
  assert.deepEqual(
    problemsOf(MODELS + CLUSTER, {}, files({ "cluster.secret": SECRET })),
    [
      "cluster (line 5): a cluster needs store.type: redis, which every node shares " +
      "(store.type is kv, which only this process sees)",
    ],
  );
  assert.deepEqual(problemsOf(MODELS + REDIS + CLUSTER, {}, files({ "cluster.secret": "short" })), [
    "cluster.secret_file (line 12): expected a secret of at least 16 characters",
  ]);
  assert.deepEqual(
    problemsOf(
      MODELS + REDIS + CLUSTER + "  heartbeat: 2\n  lease: 3\n",
      {},
      files({
        "cluster.secret": SECRET,
      }),
    ),
    [
      "cluster.lease (line 14): expected at least twice cluster.heartbeat (2s), so that one " +
      "late heartbeat does not drop a node",
    ],
  );
  const missing = problemsOf(MODELS + REDIS + CLUSTER, {}, files({}));
  assert.equal(missing.length, 1);
  assert.match(missing[0], /^cluster\.secret_file \(line 12\): cannot read cluster\.secret/);
});

const request = (path = "/v1/chat/completions", text = '{"model":"a"}') => ({
  method: "POST",
  path,
  body: new TextEncoder().encode(text),
});

Deno.test("hop header: verifies at its target node for the same secret and request, within a minute", () => {
  const signer = HopSigner.create(SECRET);
  const caller = { name: "alice", priority: "batch" as const };
  const hop = { from: "gpu-1", to: "gpu-2", caller };
  const header = signer.sign(hop, request(), 1e6);
  assert.equal(signer.plausible(header, "gpu-2", 1e6 + 59_000), true);
  assert.deepEqual(signer.verify(header, request(), "gpu-2", 1e6 + 59_000), hop);
  const anonymous = signer.sign({ ...hop, caller: null }, request("/v1/x"), 0);
  assert.deepEqual(signer.verify(anonymous, request("/v1/x"), "gpu-2", 0), {
    ...hop,
    caller: null,
  });
});

Deno.test("hop header: another secret, target node, path, body, caller, a stale time or a made-up value do not verify", () => {
  const signer = HopSigner.create(SECRET);
  const other = HopSigner.create("another-cluster-secret-456");
  const header = signer.sign({ from: "gpu-1", to: "gpu-2", caller: null }, request(), 1e6);
  assert.equal(other.verify(header, request(), "gpu-2", 1e6), null);
  assert.equal(signer.verify(header, request(), "gpu-3", 1e6), null);
  assert.equal(signer.plausible(header, "gpu-3", 1e6), false);
  assert.equal(signer.verify(header, request("/v1/embeddings"), "gpu-2", 1e6), null);
  assert.equal(
    signer.verify(header, request(undefined, '{"model":"b"}'), "gpu-2", 1e6),
    null,
  );
  assert.equal(signer.verify(header, request(), "gpu-2", 1e6 + 61_000), null);
  assert.equal(signer.plausible(header, "gpu-2", 1e6 + 61_000), false);
  // A client that copies a real header and names itself another caller breaks the signature.
  const parts = header.split(";");
  parts[5] = "admin";
  assert.equal(signer.verify(parts.join(";"), request(), "gpu-2", 1e6), null);
  for (
    const forged of [
      "1",
      "v3;gpu-1;gpu-2;0;n;;;00",
      `v3;gpu-1;gpu-2;${1e6};n;;;${"0".repeat(64)}`,
      header.replace("v3;", "v2;"),
    ]
  ) {
    assert.equal(signer.verify(forged, request(), "gpu-2", 1e6), null, forged);
  }
});

Deno.test("hop header: a replayed one is refused, in its minute and after; the same request forwarded again verifies", () => {
  const signer = HopSigner.create(SECRET);
  const hop = { from: "gpu-1", to: "gpu-2", caller: null };
  const header = signer.sign(hop, request(), 1e6);
  assert.deepEqual(signer.verify(header, request(), "gpu-2", 1e6 + 10), hop);
  assert.equal(signer.verify(header, request(), "gpu-2", 1e6 + 20), null); // the replay
  // The same request forwarded again is signed with another nonce: it verifies.
  assert.deepEqual(signer.verify(signer.sign(hop, request(), 1e6), request(), "gpu-2", 1e6), hop);
  // Past its minute the header is refused for its time (its nonce is no longer kept).
  const later = signer.sign(hop, request(), 1e6 + 70_000);
  assert.deepEqual(signer.verify(later, request(), "gpu-2", 1e6 + 70_000), hop);
  assert.equal(signer.verify(header, request(), "gpu-2", 1e6 + 70_000), null);
});

function node(name: string, fields: Partial<NodeStatus> = {}): NodeStatus {
  return {
    node: name,
    url: `http://${name}:8888`,
    models: [{ id: "a", aliases: [] }, { id: "b", aliases: [] }],
    residents: [],
    roomFor: ["a", "b"],
    waiting: {},
    running: 0,
    freeWorkers: 0,
    loadS: {},
    ...fields,
  };
}

const busyWith = (model: string, extra: Partial<NodeStatus> = {}) => ({
  residents: [{ model, phase: "ready" }],
  roomFor: [],
  running: 1,
  ...extra,
});

const target = (r: ReturnType<typeof route>) => r.kind === "local" ? "local" : r.peer.node;

Deno.test("route(): resident or waited for here stays here, even when a peer has it too", () => {
  const peer = node("gpu-2", busyWith("a"));
  assert.equal(target(route("a", node("gpu-1", busyWith("a")), [peer], null)), "local");
  const waitingHere = node("gpu-1", busyWith("b", { waiting: { a: 2 } }));
  assert.equal(target(route("a", waitingHere, [peer], null)), "local");
});

Deno.test("route(): resident, loading or waited for on a peer goes to that peer, the least loaded of several", () => {
  const self = node("gpu-1", busyWith("a"));
  const loading = node("gpu-2", { residents: [{ model: "b", phase: "starting" }], roomFor: [] });
  assert.equal(target(route("b", self, [loading], null)), "gpu-2");
  const busy = node("gpu-2", busyWith("b", { waiting: { b: 5 } }));
  const light = node("gpu-3", busyWith("b"));
  assert.equal(target(route("b", self, [busy, light], null)), "gpu-3");
});

Deno.test("route(): nowhere yet, an idle node is picked over a busy one, this node winning a tie", () => {
  const idle = node("gpu-2");
  assert.equal(target(route("b", node("gpu-1", busyWith("a")), [idle], null)), "gpu-2");
  assert.equal(target(route("b", node("gpu-1"), [idle], null)), "local");
  // Neither has room: the one with less waiting and running work.
  const heavy = node("gpu-2", busyWith("a", { waiting: { a: 9 } }));
  const self = node("gpu-1", busyWith("b", { waiting: {} }));
  assert.equal(
    target(route("c", { ...self, models: [{ id: "c", aliases: [] }] }, [heavy], null)),
    "local",
  );
});

Deno.test("route(): a node that cannot serve the model is never picked; the last peer chosen holds until its heartbeat shows it", () => {
  const cannot = node("gpu-2", { models: [{ id: "a", aliases: [] }] });
  assert.equal(target(route("b", node("gpu-1", busyWith("a")), [cannot], null)), "local");
  // gpu-3 was just sent b; its heartbeat does not show it yet, and gpu-2 looks cheaper now.
  const self = node("gpu-1", busyWith("a"));
  const sentBefore = node("gpu-3", busyWith("c", { models: [{ id: "b", aliases: [] }] }));
  assert.equal(target(route("b", self, [node("gpu-2"), sentBefore], "gpu-3")), "gpu-3");
  // Unless gpu-3 is gone from the live peers.
  assert.equal(target(route("b", self, [node("gpu-2")], "gpu-3")), "gpu-2");
});

Deno.test("route(): a model only peers serve goes to one of them", () => {
  const self = node("gpu-1", { models: [{ id: "a", aliases: [] }] });
  const peer = node("gpu-2", { models: [{ id: "big", aliases: [] }] });
  assert.equal(target(route("big", self, [peer], null)), "gpu-2");
});

Deno.test("docs/cluster.md's cluster block is a valid config, and compose.cluster.yaml refuses to start without its token and SRH address", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/cluster.md", import.meta.url));
  const block = /```yaml\n(cluster:[\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block !== undefined, "docs/cluster.md has no cluster: yaml block");
  const config = parseConfig(
    MODELS + REDIS + block,
    "config.yml",
    {},
    files({ "/etc/lqp/cluster.secret": SECRET }),
  );
  assert.equal(config.cluster?.node, "gpu-1");
  const compose = parseYaml(
    await Deno.readTextFile(new URL("../compose.cluster.yaml", import.meta.url)),
  ) as { services: Record<string, { environment?: Record<string, string> }> };
  const env = compose.services.proxy.environment!;
  assert.equal(env.LQP_STORE, "redis");
  assert.match(env.UPSTASH_REDIS_REST_TOKEN, /^\$\{SRH_TOKEN:\?/);
  assert.match(env.UPSTASH_REDIS_REST_URL, /^\$\{SRH_URL:\?/);
  assert.match(compose.services.srh.environment!.SRH_TOKEN, /^\$\{SRH_TOKEN:\?/);
});
