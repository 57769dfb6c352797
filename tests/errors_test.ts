import assert from "node:assert/strict";
import { ApiError, ERROR_CATALOGUE } from "../lib/errors.ts";

/** The (status, code) pairs of docs/api.md's error table, as `"<status> <code>"`. */
async function documentedPairs(): Promise<string[]> {
  const text = await Deno.readTextFile(new URL("../docs/api.md", import.meta.url));
  const lines = text.split("\n");
  const intro = lines.findIndex((line) => line.includes("Every error uses the OpenAI shape"));
  assert.notEqual(intro, -1, "docs/api.md has no error table");
  const start = lines.findIndex((line, i) => i > intro && line.startsWith("|"));
  const end = lines.findIndex((line, i) => i > start && !line.startsWith("|"));
  // The first two rows are the header and the separator.
  return lines.slice(start + 2, end).flatMap((row) => {
    const [status, codes] = row.split("|").slice(1, 3).map((cell) => cell.trim());
    return [...codes.matchAll(/`([a-z_]+)`/g)].map(([, code]) => `${status} ${code}`);
  });
}

function cataloguedPairs(): string[] {
  return Object.entries(ERROR_CATALOGUE).flatMap(([code, spec]) =>
    Object.keys(spec).map((status) => `${status} ${code}`)
  );
}

Deno.test("docs/api.md's error table lists exactly the catalogue's (status, code) pairs", async () => {
  assert.deepEqual((await documentedPairs()).sort(), cataloguedPairs().sort());
});

Deno.test("an ApiError takes its OpenAI type from the catalogue entry for its status", () => {
  assert.equal(new ApiError(408, "request_timeout", "slow client").type, "invalid_request_error");
  assert.equal(new ApiError(504, "request_timeout", "slow answer").type, "timeout_error");
  assert.equal(new ApiError(404, "upstream_error", "backend said 404").type, "server_error");
  assert.equal(new ApiError(429, "queue_full", "full").type, "rate_limit_error");
});
