// Sends chat requests with the official `openai` npm client on Node and aborts them with an
// AbortController, as a Node application would. Same line protocol as cancel_client.py:
// a JSON scenario per line on stdin ({base_url, body, cancel_ms}), a JSON result per line out.
import OpenAI from "openai";
import { createInterface } from "node:readline";

async function scenario({ base_url: baseURL, body, cancel_ms: cancelMs }) {
  const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "unused", maxRetries: 0 });
  const abort = new AbortController();
  const run = (async () => {
    const answer = await client.chat.completions.create(body, { signal: abort.signal });
    if (body.stream) { for await (const _ of answer) { /* read it all */ } }
    return 200;
  })();
  let timer;
  const late = new Promise((resolve) => timer = setTimeout(() => resolve("late"), cancelMs));
  const first = await Promise.race([run.then(() => "done", () => "done"), late]);
  clearTimeout(timer);
  if (first === "late") {
    abort.abort();
    await run.catch(() => {});
    return { outcome: "cancelled", status: null, error: null };
  }
  return run.then(
    (status) => ({ outcome: "finished", status, error: null }),
    (err) => ({ outcome: "finished", status: err.status ?? null, error: String(err) }),
  );
}

for await (const line of createInterface({ input: process.stdin })) {
  const result = await scenario(JSON.parse(line));
  process.stdout.write(JSON.stringify(result) + "\n");
}
