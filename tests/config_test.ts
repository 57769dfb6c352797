import assert from "node:assert/strict";
import { findModel, parseConfig } from "../lib/config.ts";
import { problemsOf } from "./support/config_problems.ts";

const SEED = `queue_size: 50
request_timeout: 600
num_workers: 2
models:
  gpt-oss-120b:
    container_name: gpt-oss-server
    backend_url: http://localhost:8080/v1
    health_url: http://localhost:8080/health
    startup_timeout: 180
`;

Deno.test("parseConfig() accepts the seed's config unchanged, with its values", () => {
  const config = parseConfig(SEED, "config.yml");
  assert.equal(config.queueSize, 50);
  assert.equal(config.requestTimeoutMs, 600_000);
  assert.equal(config.numWorkers, 2);
  assert.equal(config.port, 8888);
  assert.equal(config.dockerSocket, "/var/run/docker.sock");
  assert.deepEqual(config.models[0], {
    id: "gpt-oss-120b",
    containerName: "gpt-oss-server",
    backendUrl: "http://localhost:8080/v1",
    healthUrl: "http://localhost:8080/health",
    startupTimeoutMs: 180_000,
    aliases: [],
    maxWaitMs: 60_000,
    memoryGb: null,
    parallel: 2,
    kvCache: null,
    onDisconnect: "abort",
    ttlMs: null,
    loadTimeHintMs: 180_000,
    waitFeedback: "comment",
    container: null,
  });
  assert.deepEqual(config.scheduler, {
    policy: "affinity",
    maxWaitMs: 60_000,
    minResidencyMs: null,
    batchAgingMs: 600_000,
  });
});

Deno.test("parseConfig() reads the scheduler block and per-model max_wait and load_time", () => {
  const config = parseConfig(
    `scheduler:
  policy: greedy
  max_wait: 30
  min_residency: 10
  batch_aging: 120
models:
  m:
    container_name: c
    backend_url: http://h:1/v1
    max_wait: 5
    load_time: 12
`,
    "x",
  );
  assert.deepEqual(config.scheduler, {
    policy: "greedy",
    maxWaitMs: 30_000,
    minResidencyMs: 10_000,
    batchAgingMs: 120_000,
  });
  assert.equal(config.models[0].maxWaitMs, 5_000);
  assert.equal(config.models[0].loadTimeHintMs, 12_000);
});

Deno.test("parseConfig() rejects an unknown scheduler policy, listing the valid ones", () => {
  assert.deepEqual(problemsOf("scheduler:\n  policy: lifo\n"), [
    'scheduler.policy (line 2): Invalid option: expected one of "affinity"|"greedy"|"fifo"',
  ]);
});

Deno.test("parseConfig() derives health_url from backend_url when it is left out", () => {
  const config = parseConfig(
    "models:\n  m:\n    container_name: c\n    backend_url: http://10.0.0.5:9000/v1\n",
    "x",
  );
  assert.equal(config.models[0].healthUrl, "http://10.0.0.5:9000/health");
  assert.equal(config.models[0].startupTimeoutMs, 120_000);
});

Deno.test("parseConfig() lets NUM_WORKERS, LQP_PORT and DOCKER_SOCKET override the file", () => {
  const config = parseConfig(SEED, "x", {
    NUM_WORKERS: "4",
    LQP_PORT: "9999",
    DOCKER_SOCKET: "/run/docker.sock",
  });
  assert.equal(config.numWorkers, 4);
  assert.equal(config.port, 9999);
  assert.equal(config.dockerSocket, "/run/docker.sock");
});

Deno.test("parseConfig() rejects a bad NUM_WORKERS naming the variable", () => {
  assert.deepEqual(problemsOf(SEED, { NUM_WORKERS: "two" }), [
    "env NUM_WORKERS: expected an integer from 1 to 9007199254740991, got 'two'",
  ]);
});

Deno.test("parseConfig() lists every problem with key path and line", () => {
  const problems = problemsOf(`queue_size: fifty
num_workers: 2
bogus: 1
models:
  a:
    container_name: "../etc/passwd"
    backend_url: notaurl
    startup_timout: 3
  b:
    backend_url: http://x:1/v1
`);
  assert.deepEqual(problems.toSorted(), [
    "bogus (line 3): unknown key (typo?)",
    "models.a.backend_url (line 7): expected an http:// or https:// URL",
    "models.a.container_name (line 6): expected a Docker container name (letters, digits, '_', '.', '-'; no '/')",
    "models.a.startup_timout (line 8): unknown key (typo?)",
    "models.b.container_name (line 9): required key is missing (expected string)",
    "queue_size (line 1): Invalid input: expected number, received string",
  ]);
});

Deno.test("parseConfig() reports YAML syntax errors with their line", () => {
  const problems = problemsOf("queue_size: 5\nmodels: [a,\n");
  assert.equal(problems.length, 1);
  assert.match(problems[0], /^line 3: /);
});

Deno.test("parseConfig() rejects aliases and containers used twice", () => {
  const problems = problemsOf(`models:
  a:
    container_name: same
    backend_url: http://h:1/v1
    aliases: [shared]
  b:
    container_name: same
    backend_url: http://h:1/v1
    aliases: [shared]
`);
  assert.deepEqual(problems, [
    "models.b.aliases (line 9): 'shared' is already used by a",
    "models.b.container_name (line 7): 'same' is already used by a",
  ]);
});

Deno.test("parseConfig() accepts max_body_size as bytes or with a unit", () => {
  assert.equal(parseConfig("max_body_size: 1kb", "x").maxBodyBytes, 1024);
  assert.equal(parseConfig("max_body_size: 2048", "x").maxBodyBytes, 2048);
  assert.equal(parseConfig("max_body_size: 1.5mb", "x").maxBodyBytes, 1.5 * 1024 * 1024);
});

Deno.test("parseConfig() accepts an empty file with every default", () => {
  const config = parseConfig("", "x");
  assert.equal(config.models.length, 0);
  assert.equal(config.queueSize, 50);
});

Deno.test("findModel() resolves ids and aliases", () => {
  const config = parseConfig(
    "models:\n  m:\n    container_name: c\n    backend_url: http://h:1/v1\n    aliases: [mm]\n",
    "x",
  );
  assert.equal(findModel(config, "mm")?.id, "m");
  assert.equal(findModel(config, "m")?.id, "m");
  assert.equal(findModel(config, "nope"), undefined);
});

Deno.test("parseConfig() rejects a preload that names no configured model", () => {
  assert.deepEqual(problemsOf("preload: nope\n"), [
    "preload (line 1): 'nope' is not a configured model",
  ]);
});

Deno.test("parseConfig() with memory_budget: every model declares memory, none above the budget; parallel defaults to num_workers", () => {
  const model = (id: string, extra: string) =>
    `  ${id}:\n    container_name: ${id}\n    backend_url: http://localhost:${
      id.length + 8000
    }/v1\n${extra}`;
  assert.deepEqual(
    problemsOf(
      `memory_budget: 40\nmodels:\n${model("small", "")}${model("huge", "    memory: 64\n")}`,
    ),
    [
      "models.small.memory (line 3): required when memory_budget is set (GB its container takes)",
      "models.huge.memory (line 6): 64 GB is more than memory_budget (40 GB)",
    ],
  );
  const config = parseConfig(
    `memory_budget: 40\nnum_workers: 3\nmodels:\n${model("a", "    memory: 10\n")}${
      model("b", "    memory: 30\n    parallel: 1\n")
    }`,
    "config.yml",
  );
  assert.equal(config.memoryBudgetGb, 40);
  assert.deepEqual(config.models.map((m) => [m.id, m.memoryGb, m.parallel]), [
    ["a", 10, 3],
    ["b", 30, 1],
  ]);
  assert.equal(parseConfig(SEED, "config.yml").memoryBudgetGb, null);
});

Deno.test("parseConfig() kv_cache: a dir is mounted into a container: block and becomes --slot-save-path; without a block it is refused", () => {
  const block = (kv: string, container = true) =>
    `models:\n  m:\n    container_name: m\n    backend_url: http://localhost:8080/v1\n` +
    `    kv_cache: ${kv}\n` +
    (container
      ? `    container:\n      image: llama\n      command: ["-m", "/models/x.gguf"]\n`
      : "");
  const config = parseConfig(
    block("{ save: true, dir: data/kv, max_bytes: 2gb }"),
    "config.yml",
    {},
    undefined,
    Deno.cwd(),
  );
  const model = config.models[0];
  const dir = `${Deno.cwd()}/data/kv`;
  assert.deepEqual(model.kvCache, {
    dir,
    maxBytes: 2 * 1024 ** 3,
    saveTimeoutMs: 30_000,
    restoreTimeoutMs: 30_000,
  });
  assert.deepEqual(model.container?.command, [
    "-m",
    "/models/x.gguf",
    "--slot-save-path",
    "/kv-cache/",
  ]);
  assert.deepEqual(model.container?.volumes, [`${dir}:/kv-cache`]);
  assert.equal(parseConfig(block("{ save: false, dir: /x }"), "c").models[0].kvCache, null);
  assert.deepEqual(problemsOf(block("{ save: true, dir: /srv/kv }", false)), [
    "models.m.kv_cache.dir (line 5): needs a container: block to mount it; for a container you created, start llama-server with --slot-save-path and leave dir out",
  ]);
});
