/**
 * Writes the shipped traces in sim/traces/ from a seeded generator, so they can be rebuilt
 * bit for bit: `deno run --allow-write=sim/traces sim/make_traces.ts`.
 */
import type { Priority } from "../lib/priority.ts";
import type { Trace, TraceHeader, TraceRequest } from "./simulate.ts";

/** mulberry32: small, fast, good enough for traffic shapes. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const exponential = (rand: () => number, mean: number) => -Math.log(1 - rand()) * mean;
const round = (x: number) => Math.round(x * 1000) / 1000;

function pick<T>(rand: () => number, weighted: [T, number][]): T {
  let r = rand() * weighted.reduce((sum, [, w]) => sum + w, 0);
  for (const [value, weight] of weighted) {
    r -= weight;
    if (r <= 0) return value;
  }
  return weighted[weighted.length - 1][0];
}

/** Poisson arrivals of `rate` per second between `from` and `to` seconds. */
function poisson(
  rand: () => number,
  from: number,
  to: number,
  meanGapS: number,
  make: (t: number) => Omit<TraceRequest, "t">,
): TraceRequest[] {
  const out: TraceRequest[] = [];
  for (let t = from + exponential(rand, meanGapS); t < to; t += exponential(rand, meanGapS)) {
    out.push({ t: round(t), ...make(t) });
  }
  return out;
}

const DEFAULTS = {
  num_workers: 2,
  queue_size: 1000,
  stop_s: 1,
  scheduler: { max_wait: 60, batch_aging: 600 },
};

function chat(rand: () => number, model: string, meanS = 15): Omit<TraceRequest, "t"> {
  return {
    model,
    priority: "interactive" as Priority,
    service: round(Math.min(120, 2 + exponential(rand, meanS))),
  };
}

export function makeTraces(): Trace[] {
  const traces: Trace[] = [];

  { // (a) interactive mix, skewed popularity, the seed's load times
    const rand = seededRandom(1);
    const header: TraceHeader = {
      ...DEFAULTS,
      name: "a-interactive-mix",
      description: "2 h of chat, Poisson arrivals every 18 s on average, 4 models, skewed use",
      models: {
        "qwen3-30b-instruct": { load_s: 40 },
        "gpt-oss-20b": { load_s: 25 },
        "qwen3-coder-30b": { load_s: 120 },
        "llama-3.2-3b": { load_s: 6 },
      },
    };
    const popularity: [string, number][] = [
      ["qwen3-30b-instruct", 0.5],
      ["gpt-oss-20b", 0.25],
      ["qwen3-coder-30b", 0.15],
      ["llama-3.2-3b", 0.1],
    ];
    const requests = poisson(rand, 0, 7200, 18, () => chat(rand, pick(rand, popularity)));
    traces.push({ header, requests });
  }

  { // (b) an n8n batch burst on one model while chat users use two others
    const rand = seededRandom(2);
    const header: TraceHeader = {
      ...DEFAULTS,
      name: "b-batch-burst",
      description: "300 batch jobs (4 s each) at t=600 s on lfm2-8b; chat on two models for 1.5 h",
      models: {
        "lfm2-8b": { load_s: 5 },
        "qwen3-30b-instruct": { load_s: 40 },
        "gpt-oss-20b": { load_s: 25 },
      },
    };
    const chats = poisson(
      rand,
      0,
      5400,
      45,
      () => chat(rand, pick(rand, [["qwen3-30b-instruct", 0.6], ["gpt-oss-20b", 0.4]]), 12),
    );
    const burst: TraceRequest[] = Array.from({ length: 300 }, (_, i) => ({
      t: round(600 + i * 0.05),
      model: "lfm2-8b",
      priority: "batch" as Priority,
      service: round(3 + rand() * 2),
    }));
    traces.push({ header, requests: [...chats, ...burst].sort((x, y) => x.t - y.t) });
  }

  { // (c) adversarial alternation A,B,A,B at a high rate
    const header: TraceHeader = {
      ...DEFAULTS,
      name: "c-alternation",
      description: "A,B,A,B… one request every 2 s for 20 min, 3 s each, 20 s loads",
      models: { a: { load_s: 20 }, b: { load_s: 20 } },
    };
    const requests = Array.from({ length: 600 }, (_, i): TraceRequest => ({
      t: i * 2,
      model: i % 2 === 0 ? "a" : "b",
      priority: "interactive",
      service: 3,
    }));
    traces.push({ header, requests });
  }

  { // (d) one rarely used 180 s model among fast ones
    const rand = seededRandom(4);
    const header: TraceHeader = {
      ...DEFAULTS,
      name: "d-rare-giant",
      description: "1 h of chat on three fast models, gpt-oss-120b (180 s load) every ~15 min",
      models: {
        "lfm2-8b": { load_s: 5 },
        "llama-3.2-3b": { load_s: 6 },
        "gpt-oss-20b": { load_s: 25 },
        "gpt-oss-120b": { load_s: 180 },
      },
    };
    const fast = poisson(
      rand,
      0,
      3600,
      15,
      () =>
        chat(rand, pick(rand, [["lfm2-8b", 0.4], ["llama-3.2-3b", 0.3], ["gpt-oss-20b", 0.3]]), 8),
    );
    const giant = poisson(rand, 0, 3600, 900, () => chat(rand, "gpt-oss-120b", 30));
    traces.push({ header, requests: [...fast, ...giant].sort((x, y) => x.t - y.t) });
  }

  { // (e) a family evening: three people, each in chat sessions with a favourite model
    const rand = seededRandom(5);
    const header: TraceHeader = {
      ...DEFAULTS,
      name: "e-family-evening",
      description:
        "3 people, 2 h of chat sessions (a message every 20-90 s, 4-15 per session) on 4 models",
      models: {
        "llama-3.2-3b": { load_s: 7 },
        "gpt-oss-20b": { load_s: 25 },
        "qwen3-30b-instruct": { load_s: 45 },
        "qwen3-coder-30b": { load_s: 120 },
      },
    };
    const people: [string, number][][] = [
      [["qwen3-30b-instruct", 0.7], ["llama-3.2-3b", 0.3]], // homework and quick questions
      [["qwen3-coder-30b", 0.8], ["gpt-oss-20b", 0.2]], // coding
      [["gpt-oss-20b", 0.6], ["llama-3.2-3b", 0.4]], // chat
    ];
    const requests: TraceRequest[] = [];
    for (const likes of people) {
      let t = exponential(rand, 600);
      while (t < 7200) {
        const model = pick(rand, likes);
        for (let n = 4 + Math.floor(rand() * 12); n > 0 && t < 7200; n--) {
          requests.push({ t: round(t), ...chat(rand, model, 10) });
          t += 20 + rand() * 70; // reading the answer, typing the next message
        }
        t += exponential(rand, 900); // a pause between sessions
      }
    }
    traces.push({ header, requests: requests.sort((x, y) => x.t - y.t) });
  }

  { // (f) a coding agent: a 30B coder plans, then fans out to 3B sub-agents, and again
    const rand = seededRandom(6);
    const header: TraceHeader = {
      ...DEFAULTS,
      name: "f-agent-fanout",
      description:
        "1 h of an agent: a coder call (120 s load), then 3-8 sub-agent calls at once to a 3B model",
      models: { "qwen3-coder-30b": { load_s: 120 }, "qwen2.5-3b": { load_s: 7 } },
    };
    const requests: TraceRequest[] = [];
    let t = 0;
    while (t < 3600) {
      const plan = round(10 + rand() * 40);
      requests.push({
        t: round(t),
        model: "qwen3-coder-30b",
        priority: "interactive",
        service: plan,
      });
      t += plan + 0.5; // the agent acts on the plan
      const fan = 3 + Math.floor(rand() * 6);
      let slowest = 0;
      for (let i = 0; i < fan; i++) {
        const service = round(2 + rand() * 6);
        slowest = Math.max(slowest, service);
        requests.push({
          t: round(t + i * 0.05),
          model: "qwen2.5-3b",
          priority: "interactive",
          service,
        });
      }
      t += slowest + 1 + rand() * 20; // collects the answers, thinks, calls the coder again
    }
    traces.push({ header, requests });
  }

  { // (g) a night of batch work on a small model, a few chats, and a rare giant
    const rand = seededRandom(7);
    const header: TraceHeader = {
      ...DEFAULTS,
      name: "g-night-batch",
      description:
        "600 batch lines (lfm2-8b) from 01:00, 20 chats on qwen3-30b, 2 requests for a 180 s giant",
      models: {
        "lfm2-8b": { load_s: 5 },
        "qwen3-30b-instruct": { load_s: 40 },
        "gpt-oss-120b": { load_s: 180 },
      },
    };
    const batch: TraceRequest[] = Array.from({ length: 600 }, (_, i) => ({
      t: round(i * 0.02),
      model: "lfm2-8b",
      priority: "batch" as Priority,
      service: round(3 + rand() * 3),
    }));
    const chats = Array.from({ length: 20 }, () => ({
      t: round(rand() * 1800),
      ...chat(rand, "qwen3-30b-instruct", 10),
    }));
    const giant = [300, 1200].map((t) => ({ t, ...chat(rand, "gpt-oss-120b", 30) }));
    traces.push({
      header,
      requests: [...batch, ...chats, ...giant].sort((x, y) => x.t - y.t),
    });
  }
  traces.push(
    withBudget(traces, "e-family-evening", 24, {
      "llama-3.2-3b": 3,
      "gpt-oss-20b": 14,
      "qwen3-30b-instruct": 20,
      "qwen3-coder-30b": 20,
    }, "the 3B fits beside any one other model"),
    withBudget(traces, "f-agent-fanout", 24, {
      "qwen3-coder-30b": 20,
      "qwen2.5-3b": 3,
    }, "coder and 3B fit together"),
  );
  return traces;
}

/** The same requests on a machine with `budget` GB, each model declaring `memory`. */
function withBudget(
  traces: Trace[],
  name: string,
  budget: number,
  memory: Record<string, number>,
  note: string,
): Trace {
  const base = traces.find((t) => t.header.name === name)!;
  const models = Object.fromEntries(
    Object.entries(base.header.models).map(([id, m]) => [id, { ...m, memory: memory[id] }]),
  );
  return {
    header: {
      ...base.header,
      name: `${name}-${budget}gb`,
      description: `${base.header.description}; memory_budget ${budget} GB: ${note}`,
      memory_budget: budget,
      models,
    },
    requests: base.requests,
  };
}

export function toJsonl(trace: Trace): string {
  return [trace.header, ...trace.requests].map((line) => JSON.stringify(line)).join("\n") + "\n";
}

if (import.meta.main) {
  const dir = new URL("./traces/", import.meta.url);
  for (const trace of makeTraces()) {
    await Deno.writeTextFile(new URL(`${trace.header.name}.jsonl`, dir), toJsonl(trace));
  }
}
