/**
 * @module
 * What the Redis store reads back, checked before it is believed: job records (kept as JSON
 * text) and the replies of scripts and commands. Redis is shared ground (other programs, older
 * versions of these scripts, a hand edit): a reply of the wrong shape becomes an error that
 * says what was wrong, not a job with missing fields that the next transition writes back.
 */
import { z } from "zod";
import { PRIORITIES } from "../priority.ts";
import type { JobRecord } from "./contract.ts";
import { RECORD_STATES } from "./record_states.ts";

const JobFields = z.object({
  id: z.string(),
  kind: z.enum(["sync", "async"]),
  model: z.string(),
  priority: z.enum(PRIORITIES),
  state: z.enum(RECORD_STATES),
  attempts: z.number().int().min(0),
  node: z.string().nullable(),
  lane: z.string().nullable(),
  order: z.number(),
  group: z.string().nullable(),
  createdAt: z.number(),
  updatedAt: z.number(),
  payload: z.string().nullable(),
  result: z.string().nullable(),
}) satisfies z.ZodType<JobRecord>;

/** A job record as Redis keeps it: its JSON text. */
export const JobJson = z.string().transform((text, ctx): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    ctx.addIssue({ code: "custom", message: "not JSON" });
    return z.NEVER;
  }
}).pipe(JobFields);

/** A script's "it happened" (1) or "it did not" (0). */
export const Flag = z.union([z.literal(0), z.literal(1)]).transform((n) => n === 1);

/** How many records a script changed. */
export const Count = z.number().int().min(0);

/** The reply of a script that has nothing to tell but that it ran. */
export const Ran = z.literal(1);

/** HGETALL without the client's deserialization: [field, value, field, value, ...]. */
export const HashFields = z.array(z.string())
  .refine((items) => items.length % 2 === 0, "an odd number of items")
  .transform((items) => {
    const fields = new Map<string, string>();
    for (let i = 0; i < items.length; i += 2) fields.set(items[i], items[i + 1]);
    return fields;
  });

/** A hash of counters (HINCRBY): every value an integer. */
export const Counters = HashFields.pipe(
  z.map(z.string(), z.string().regex(/^-?\d+$/, "not an integer").transform(Number)),
);

/** `reply` in the shape `schema` describes, or an error naming what was read and what was off. */
export function checked<T>(schema: z.ZodType<T>, reply: unknown, what: string): T {
  const parsed = schema.safeParse(reply);
  if (parsed.success) return parsed.data;
  throw new MalformedReplyError(what, parsed.error);
}

export class MalformedReplyError extends Error {
  constructor(what: string, error: z.ZodError) {
    super(`Redis answered ${what} with an unexpected shape: ${z.prettifyError(error)}`, {
      cause: error,
    });
    this.name = "MalformedReplyError";
  }
}
