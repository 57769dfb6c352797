/**
 * The byte-level JSON check accepts exactly what TextDecoder + JSON.parse accept, names the
 * same fault first, and keeps what the request checks read while standing in for the rest.
 */
import assert from "node:assert/strict";
import { jsonDepth, JsonScanError, jsonSkeleton } from "../lib/json_scan.ts";
import { seededRandom } from "../sim/make_traces.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const MAX_DEPTH = 8;

/** What the proxy answered before: decode, depth, parse; null when the body is fine. */
function oldVerdict(body: Uint8Array): "utf8" | "depth" | "syntax" | null {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch {
    return "utf8";
  }
  if (jsonDepth(text, MAX_DEPTH) > MAX_DEPTH) return "depth";
  try {
    JSON.parse(text);
  } catch {
    return "syntax";
  }
  return null;
}

function newVerdict(body: Uint8Array): "utf8" | "depth" | "syntax" | null {
  try {
    jsonSkeleton(body, MAX_DEPTH);
    return null;
  } catch (err) {
    assert.ok(err instanceof JsonScanError, String(err));
    return err.kind;
  }
}

const CORPUS = [
  '{"model":"a","messages":[{"role":"user","content":"hi"}]}',
  ' \n\t{"a":[1,2,{"b":null}],"c":true,"d":false} \r\n',
  "[]",
  "{}",
  '""',
  "0",
  "-0",
  "-0.5e+10",
  "1E5",
  "12.",
  "01",
  "-",
  "1e",
  ".5",
  "+1",
  "tru",
  "nul",
  "truex",
  '{"a":1,}',
  "[1,]",
  "[,1]",
  '{"a" 1}',
  "{a:1}",
  "{'a':1}",
  '{"a":1}{"b":2}',
  '{"a":"\\u00e9\\n\\"\\\\\\/\\b\\f\\r\\t"}',
  '{"a":"\\uD800"}',
  '{"a":"\\u12"}',
  '{"a":"\\x41"}',
  '{"a":"tab\there"}',
  '{"a":"unterminated}',
  '{"__proto__":{"polluted":true},"constructor":1}',
  '{"a":"é ü 中文 🎉"}',
  "[[[[[[[[1]]]]]]]]",
  "[[[[[[[[[1]]]]]]]]]",
  '{"x":"[[[[[[[[[[[[not nesting]]]]]]]]]]]"}',
  "[[[[[[[[[[ broken",
  '\ufeff{"bom":1}',
  "",
  "   ",
  "NaN",
  "Infinity",
  '{"a":1} // comment',
  '{"a":1}\u00a0',
];

const RAW: Uint8Array[] = [
  new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]), // bad continuation in a string
  new Uint8Array([0x7b, 0xed, 0xa0, 0x80, 0x7d]), // a surrogate, outside a string
  new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22]), // a surrogate, inside
  new Uint8Array([0x22, 0xc0, 0xaf, 0x22]), // overlong
  new Uint8Array([0x22, 0xf4, 0x90, 0x80, 0x80, 0x22]), // past U+10FFFF
  new Uint8Array([0x22, 0xe2, 0x82, 0xac, 0x22]), // € : fine
  new Uint8Array([0x5b, 0x31, 0x2c, 0xff, 0x5d]), // a syntax error that is also bad UTF-8
  new Uint8Array([0x5b, 0x2c, 0x22, 0xff, 0x22, 0x5d]), // syntax error, bad UTF-8 later
];

Deno.test("jsonSkeleton() accepts exactly what TextDecoder + JSON.parse accept, naming the same fault", () => {
  for (const text of CORPUS) {
    const body = bytes(text);
    assert.equal(newVerdict(body), oldVerdict(body), JSON.stringify(text));
  }
  for (const body of RAW) assert.equal(newVerdict(body), oldVerdict(body), String(body));
});

Deno.test("jsonSkeleton() agrees with JSON.parse on 20,000 seeded mutations of request bodies", () => {
  const random = seededRandom(42);
  const seeds = CORPUS.slice(0, 2).concat([
    '{"model":"m","stream":true,"temperature":0.7,"max_tokens":64,"messages":[{"role":"system","content":"Be brief. \\"quoted\\" é"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"number"}}}}}]}',
  ]);
  const alphabet = bytes('{}[]",:\\ \n0123456789.-+eEtrufalsn"u\u00e9');
  for (let n = 0; n < 20_000; n++) {
    const body = bytes(seeds[n % seeds.length]);
    const edits = 1 + Math.floor(random() * 3);
    const out = Array.from(body);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(random() * (out.length + 1));
      const kind = random();
      const b = random() < 0.05
        ? Math.floor(random() * 256)
        : alphabet[Math.floor(random() * alphabet.length)];
      if (kind < 0.4) out.splice(at, 1);
      else if (kind < 0.7) out.splice(at, 0, b);
      else out[Math.min(at, out.length - 1)] = b;
    }
    const mutated = new Uint8Array(out);
    assert.equal(newVerdict(mutated), oldVerdict(mutated), new TextDecoder().decode(mutated));
  }
});

Deno.test("jsonSkeleton() keeps the fields the checks read and stands in for long or deep ones", () => {
  const long = "x".repeat(5000);
  const body = JSON.stringify({
    model: "qwen",
    stream: true,
    max_tokens: 12,
    prompt: long,
    messages: [
      { role: "user", content: long, name: "bob" },
      { role: "assistant", content: [{ type: "text", text: "hi" }], extra: { deep: [1, 2] } },
    ],
    tools: [{ type: "function", function: { name: "f" } }],
  }).replace(/}$/, ',"__proto__":{"polluted":true}}');
  const skeleton = jsonSkeleton(bytes(body), 64) as Record<string, unknown>;
  assert.equal(skeleton.model, "qwen");
  assert.equal(skeleton.stream, true);
  assert.equal(skeleton.max_tokens, 12);
  assert.equal(skeleton.prompt, ""); // a long string keeps its type, not its text
  assert.deepEqual(skeleton.messages, [
    { role: "user", content: "", name: "bob" },
    { role: "assistant", content: [], extra: {} },
  ]);
  assert.deepEqual(skeleton.tools, [{ type: "function", function: {} }]);
  assert.ok(Object.hasOwn(skeleton, "__proto__"));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});
