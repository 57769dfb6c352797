/**
 * @module
 * Batch API helpers: JSONL files of chat requests, waiting for a batch to finish, and
 * reading its output lines. Each call takes the headers to send (an API key), if any.
 */
import { waitFor } from "./wait_for.ts";

export interface OutputLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: Record<string, unknown> } | null;
  error: { code: string; message: string } | null;
}

/** One chat line per model name, `custom_id` = `line-<index>`. */
export function batchFile(models: string[], extra: Record<string, unknown> = {}): string {
  return models.map((model, i) =>
    JSON.stringify({
      custom_id: `line-${i}`,
      method: "POST",
      url: "/v1/chat/completions",
      body: { model, messages: [{ role: "user", content: `line ${i}` }], ...extra },
    })
  ).join("\n") + "\n";
}

/** The `custom_id`s of a batch file's lines, in order. */
export function customIds(text: string): string[] {
  return text.trim().split("\n").map((line) => JSON.parse(line).custom_id);
}

export async function uploadBatchFile(
  baseUrl: string,
  text: string,
  headers: HeadersInit = {},
): Promise<Response> {
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", new File([text], "requests.jsonl", { type: "application/jsonl" }));
  return await fetch(`${baseUrl}/v1/files`, { method: "POST", body: form, headers });
}

/** Uploads `text` as a batch file and creates a batch of it. */
export async function submitBatch(
  baseUrl: string,
  text: string,
  headers: HeadersInit = {},
): Promise<{ id: string }> {
  const upload = await uploadBatchFile(baseUrl, text, headers);
  if (!upload.ok) throw new Error(`upload failed: ${upload.status} ${await upload.text()}`);
  return await createBatch(baseUrl, (await upload.json()).id, headers);
}

export async function createBatch(
  baseUrl: string,
  fileId: string,
  headers: HeadersInit = {},
): Promise<{ id: string }> {
  const sent = new Headers(headers);
  sent.set("content-type", "application/json");
  const res = await fetch(`${baseUrl}/v1/batches`, {
    method: "POST",
    headers: sent,
    body: JSON.stringify({
      input_file_id: fileId,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
    }),
  });
  if (!res.ok) throw new Error(`creating the batch failed: ${res.status} ${await res.text()}`);
  return await res.json();
}

export interface BatchView {
  id: string;
  status: string;
  output_file_id: string | null;
  error_file_id: string | null;
  request_counts: { total: number; completed: number; failed: number };
}

export async function getBatch(
  baseUrl: string,
  id: string,
  headers: HeadersInit = {},
): Promise<BatchView> {
  const res = await fetch(`${baseUrl}/v1/batches/${id}`, { headers });
  if (!res.ok) throw new Error(`GET batch: ${res.status} ${await res.text()}`);
  return await res.json();
}

/** Waits until the batch reaches a final status (the deadline is a hang guard). */
export async function batchDone(
  baseUrl: string,
  id: string,
  { timeoutMs = 60_000, intervalMs = 100, headers = {} as HeadersInit } = {},
) {
  return await waitFor(`batch ${id} to finish`, async () => {
    const batch = await getBatch(baseUrl, id, headers);
    return ["completed", "cancelled", "failed", "expired"].includes(batch.status) && batch;
  }, { timeoutMs, intervalMs });
}

export async function fileLines(
  baseUrl: string,
  fileId: string | null,
  headers: HeadersInit = {},
): Promise<OutputLine[]> {
  if (fileId === null) return [];
  const res = await fetch(`${baseUrl}/v1/files/${fileId}/content`, { headers });
  if (!res.ok) throw new Error(`file content: ${res.status} ${await res.text()}`);
  return (await res.text()).split("\n").filter((line) => line !== "").map((line) =>
    JSON.parse(line)
  );
}
