/**
 * @module
 * Text streams cut into lines: what arrives in chunks (Docker's event stream, a child's stdout)
 * rarely ends where a line does.
 */

/** Splits a text stream on newlines; blank lines are dropped, a last unfinished one is kept back. */
export function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(text, controller) {
      const parts = (rest + text).split("\n");
      rest = parts.pop()!;
      for (const line of parts) if (line.trim() !== "") controller.enqueue(line);
    },
  });
}
