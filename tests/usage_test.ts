/** Token counts read from the end of an answer, as the backends send them. */
import assert from "node:assert/strict";
import { StreamTail, usageIn } from "../lib/usage.ts";
import { concatBytes } from "../lib/bytes.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const usageOf = (text: string) => usageIn(bytes(text));

Deno.test("usageIn() reads OpenAI usage (cached tokens too) from a JSON answer and the last stream chunk", () => {
  const json = '{"choices":[],"usage":{"completion_tokens":4,"prompt_tokens":29,' +
    '"total_tokens":33,"prompt_tokens_details":{"cached_tokens":10}},"id":"x",' +
    '"timings":{"prompt_n":19,"cache_n":10,"predicted_n":4}}';
  assert.deepEqual(usageOf(json), { prompt: 29, completion: 4, cached: 10 });
  const stream = 'data: {"choices":[{"delta":{"content":"a \\"usage\\": {"}}]}\n\n' +
    'data: {"choices":[],"usage":{"completion_tokens":8,"prompt_tokens":31}}\n\ndata: [DONE]\n\n';
  assert.deepEqual(usageOf(stream), { prompt: 31, completion: 8, cached: null });
});

Deno.test("usageIn() falls back to llama-server timings, and says null when nothing is there", () => {
  const last = 'data: {"choices":[{"finish_reason":"stop"}],"timings":{"cache_n":4,' +
    '"prompt_n":1,"predicted_n":12}}\n\ndata: [DONE]\n\n';
  assert.deepEqual(usageOf(last), { prompt: 5, completion: 12, cached: 4 });
  assert.equal(usageOf('{"data":[{"embedding":[0.1]}]}'), null);
  assert.equal(usageOf('{"usage":{"prompt_tokens":3,"total'), null); // cut off
});

Deno.test("StreamTail keeps only the end of a long stream, split anywhere", () => {
  const tail = new StreamTail();
  for (let i = 0; i < 2000; i++) tail.push(bytes(`data: {"n":${i}}\n\n`));
  const end = bytes('data: {"usage":{"prompt_tokens":7,"completion_tokens":2000}}\n\n');
  tail.push(end.slice(0, 20));
  tail.push(end.slice(20));
  assert.deepEqual(tail.usage(), { prompt: 7, completion: 2000, cached: null });
});

Deno.test("StreamTail finds the counts in a chunk that crosses its buffer's end, or after one larger than the buffer", () => {
  const end = bytes(
    'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}\n\ndata: [DONE]\n\n',
  );
  const filler = (n: number) => bytes(`data: {"x":"${"y".repeat(n)}"}\n\n`);
  const cases: [string, Uint8Array[]][] = [
    ["a short stream", [filler(10), end]],
    ["a last chunk larger than the tail", [filler(10), concatBytes([filler(9000), end])]],
    ["one chunk larger than the tail before it", [filler(9000), end]],
  ];
  // The counts' chunk starting at every offset around the buffer's wrap.
  for (let pad = 3900; pad < 4200; pad += 7) cases.push([`pad ${pad}`, [filler(pad), end]]);
  for (const [name, chunks] of cases) {
    const tail = new StreamTail();
    for (const chunk of chunks) tail.push(chunk);
    assert.deepEqual(tail.usage(), { prompt: 3, completion: 9, cached: null }, name);
  }
  assert.equal(new StreamTail().usage(), null);
});

Deno.test("usageIn() reads only the usage object's own members, in any JSON layout", () => {
  // Pretty-printed, with a nested object holding the same key and a string value naming one.
  const pretty =
    '{\n  "usage" : {\n    "note": "prompt_tokens",\n    "x": {"prompt_tokens": 99},\n' +
    '    "list": [{"completion_tokens": 98}],\n    "prompt_tokens" :\t12,\n' +
    '    "completion_tokens": 3.0,\n    "prompt_tokens_details": { "cached_tokens": 1e1 }\n  }\n}';
  assert.deepEqual(usageOf(pretty), { prompt: 12, completion: 3, cached: 10 });
  // Counts that are not numbers count as missing: timings are asked, then zero.
  assert.deepEqual(
    usageOf('{"usage":{"prompt_tokens":null},"timings":{"prompt_n":2,"predicted_n":5}}'),
    { prompt: 2, completion: 5, cached: null },
  );
  assert.deepEqual(
    usageOf('{"usage":{"prompt_tokens":4,"completion_tokens":"7","prompt_tokens_details":{}}}'),
    { prompt: 4, completion: 0, cached: null },
  );
  // Negative counts are no counts.
  assert.deepEqual(usageOf('{"usage":{"prompt_tokens":-3,"completion_tokens":2}}'), {
    prompt: 0,
    completion: 2,
    cached: null,
  });
  // Escaped quotes inside a string do not end it.
  assert.deepEqual(
    usageOf('{"usage":{"n":"a \\"prompt_tokens\\": 5","prompt_tokens":6,"completion_tokens":1}}'),
    { prompt: 6, completion: 1, cached: null },
  );
});

Deno.test("usageIn() reads the counts after any UTF-8 text, and says null for a cut tail", () => {
  const text = 'data: {"choices":[{"delta":{"content":"é — 日本 🙂 \\"}"}}]}\n\n' +
    'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":4}}\n\n';
  assert.deepEqual(usageOf(text), { prompt: 8, completion: 4, cached: null });
  // A tail that starts inside a character (é's second byte), inside a string, still finds the
  // last object.
  const encoded = bytes(text);
  const inside = encoded.indexOf(0xc3) + 1;
  assert.equal(encoded[inside], 0xa9);
  assert.deepEqual(usageIn(encoded.subarray(inside)), { prompt: 8, completion: 4, cached: null });
  assert.equal(usageIn(encoded.subarray(0, encoded.length - 10)), null);
});
