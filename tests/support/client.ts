/**
 * @module
 * A minimal OpenAI-style client for tests: JSON posts and an SSE reader that keeps comment
 * lines (the proxy's waiting notes) apart from data events.
 */

/** Waits `ms`: the gap between staggered arrivals of a test's traffic, never a race's cover. */
export const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function chatBody(model: string, extra: Record<string, unknown> = {}) {
  return { model, messages: [{ role: "user", content: "hi" }], ...extra };
}

export function post(
  baseUrl: string,
  body: unknown,
  { path = "/v1/chat/completions", signal }: { path?: string; signal?: AbortSignal } = {},
): Promise<Response> {
  return fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal,
  });
}

export interface SseEvent {
  comment?: string;
  /** The `event:` field, when the stream names its events. */
  event?: string;
  data?: string;
}

/** Reads SSE events one at a time as they arrive. */
export class SseReader {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(res: Response) {
    this.#reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event, or null when the stream ended. */
  async next(): Promise<SseEvent | null> {
    while (true) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        if (block.startsWith(":")) return { comment: block.slice(1).trim() };
        const event = /^event: ?(.*)$/m.exec(block)?.[1];
        const data = block.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.replace(/^data: ?/, "")).join("\n");
        return event === undefined ? { data } : { event, data };
      }
      const { done, value } = await this.#reader.read();
      if (done) return null;
      this.#buffer += value;
    }
  }

  /** Every remaining event. */
  async rest(): Promise<SseEvent[]> {
    const events: SseEvent[] = [];
    for (let e = await this.next(); e !== null; e = await this.next()) events.push(e);
    return events;
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }
}

export async function getJson(
  url: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** Models of the jobs waiting in the proxy's queue, in arrival order (`GET /queue`). */
export async function queuedModels(baseUrl: string): Promise<string[]> {
  const view = await (await fetch(`${baseUrl}/queue`)).json() as { jobs: { model: string }[] };
  return view.jobs.map((job) => job.model);
}
