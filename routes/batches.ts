/**
 * @module
 * The OpenAI Files and Batches API: `/v1/files` (multipart upload, purpose batch) and
 * `/v1/batches`. Batch lines run on the local GPU below interactive requests.
 */
import { Hono } from "hono";
import { z } from "zod";
import { type ByteTally, parseJsonObject, readBody } from "../lib/body.ts";
import { invalidRequest, unsupportedMediaType } from "../lib/errors.ts";
import type { AppDeps, AppEnv } from "./app.ts";

/** Room for the multipart envelope around the file itself. */
const MULTIPART_OVERHEAD = 64 * 1024;

const CreateBatch = z.object({
  input_file_id: z.string().min(1),
  endpoint: z.string().min(1),
  completion_window: z.string().min(1),
  metadata: z.record(z.string(), z.string()).nullable().optional(),
});

const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  after: z.string().min(1).optional(),
});

function parseOrThrow<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = issue.path.map(String).join(".") || null;
  throw invalidRequest("invalid_value", `Invalid '${param ?? "body"}': ${issue.message}`, param);
}

function listPage<T extends { id: string }>(items: T[], limit: number) {
  const data = items.slice(0, limit);
  return {
    object: "list",
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: items.length > limit,
  };
}

export function batchRoutes(deps: AppDeps): Hono<AppEnv> {
  const { live, batches, storeStatus, dispatcher } = deps;
  const run = <T>(call: () => Promise<T>) => storeStatus.run(call);
  const app = new Hono<AppEnv>();

  app.post("/files", async (c) => {
    const req = c.req.raw;
    const contentType = req.headers.get("content-type") ?? "";
    if (!/^multipart\/form-data/i.test(contentType)) throw unsupportedMediaType(contentType);
    // An upload counts against max_queued_bytes while it is read and stored.
    const hold = dispatcher.bodies.hold(c.get("caller")?.name ?? null);
    try {
      return c.json(await upload(req, hold));
    } finally {
      hold.release();
    }
  });

  async function upload(req: Request, hold: ByteTally) {
    const bytes = await readBody(req, live.current.batch.maxFileBytes + MULTIPART_OVERHEAD, hold);
    let form: FormData;
    try {
      form = await new Request(req.url, { method: "POST", headers: req.headers, body: bytes })
        .formData();
    } catch {
      throw invalidRequest("invalid_multipart", "The body is not valid multipart/form-data");
    }
    const file = form.get("file");
    if (!(file instanceof File)) {
      throw invalidRequest(
        "missing_required_parameter",
        "Missing required parameter: 'file'",
        "file",
      );
    }
    if (file.size > live.current.batch.maxFileBytes) {
      throw invalidRequest(
        "file_too_large",
        `The file is ${file.size} bytes; the limit is ${live.current.batch.maxFileBytes} (batch.max_file_size)`,
        "file",
      );
    }
    const purpose = String(form.get("purpose") ?? "");
    const content = new Uint8Array(await file.arrayBuffer());
    return await run(() => batches.uploadFile(file.name || "upload.jsonl", purpose, content));
  }

  app.get("/files", async (c) => {
    const query = parseOrThrow(ListQuery, c.req.query());
    return c.json(
      listPage(await run(() => batches.listFiles(query.limit + 1, query.after)), query.limit),
    );
  });

  app.get("/files/:id", async (c) => c.json(await run(() => batches.getFile(c.req.param("id")))));

  app.get("/files/:id/content", async (c) => {
    const bytes = await run(() => batches.fileContent(c.req.param("id")));
    return c.body(bytes.slice().buffer, 200, { "content-type": "application/jsonl" });
  });

  app.delete(
    "/files/:id",
    async (c) => c.json(await run(() => batches.deleteFile(c.req.param("id")))),
  );

  app.post("/batches", async (c) => {
    const body = await readBody(c.req.raw, live.current.maxBodyBytes);
    const json = parseJsonObject(body, live.current.maxJsonDepth);
    return c.json(await run(() => batches.createBatch(parseOrThrow(CreateBatch, json))));
  });

  app.get("/batches", async (c) => {
    const query = parseOrThrow(ListQuery, c.req.query());
    return c.json(
      listPage(await run(() => batches.listBatches(query.limit + 1, query.after)), query.limit),
    );
  });

  app.get(
    "/batches/:id",
    async (c) => c.json(await run(() => batches.getBatch(c.req.param("id")))),
  );

  app.post(
    "/batches/:id/cancel",
    async (c) => c.json(await run(() => batches.cancelBatch(c.req.param("id")))),
  );

  return app;
}
