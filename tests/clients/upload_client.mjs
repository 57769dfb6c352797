// Sends one chat request with a prompt of SIZE bytes through Node's fetch, which writes the whole
// body, and prints what it got: {"status", "code", "error"} as tests/clients/upload_client.py.
// Usage: node upload_client.mjs BASE_URL MODEL SIZE
const [baseUrl, model, size] = process.argv.slice(2);
const body = JSON.stringify({
  model,
  messages: [{ role: "user", content: "x".repeat(Number(size)) }],
});
let result;
try {
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    // A hang fails the test within a minute, not at undici's own five.
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  let code = null;
  try {
    code = JSON.parse(text).error.code;
  } catch {
    // not an OpenAI error body
  }
  result = { status: res.status, code, error: null };
} catch (err) {
  result = { status: null, code: null, error: `${err.name}: ${err.message} ${err.cause ?? ""}` };
}
console.log(JSON.stringify(result));
