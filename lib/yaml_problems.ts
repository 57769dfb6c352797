/**
 * @module
 * YAML text whose problems can be pointed at: syntax errors as "line N: message", a key path's
 * line, and zod's issues as "key.path (line N): message". Knows nothing of config.yml's keys.
 */
import type { z } from "zod";
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";

/** Line (1-based) of the deepest node on `path` that exists in the YAML document. */
export type LineLocator = (path: readonly string[]) => number;

export interface YamlDocument {
  /** The document as plain values; `{}` for an empty one. */
  readonly data: unknown;
  readonly lineOf: LineLocator;
}

export type ParsedYaml =
  | { readonly ok: true; readonly doc: YamlDocument }
  | { readonly ok: false; readonly problems: readonly string[] };

/** Syntax errors, duplicate keys among them, come back as problems instead of a document. */
export function parseYaml(text: string): ParsedYaml {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors.map((e) => `line ${lineCounter.linePos(e.pos[0]).line}: ${e.message}`),
    };
  }
  return {
    ok: true,
    doc: {
      data: doc.toJS() ?? {},
      lineOf: (path) => lineOf(doc.contents, path, lineCounter),
    },
  };
}

/** One line per issue, and one per key of an unknown-keys issue, each with its own line. */
export function schemaProblems(
  doc: YamlDocument,
  issues: readonly z.core.$ZodIssue[],
): string[] {
  const problems: string[] = [];
  for (const issue of issues) {
    const path = issue.path.map(String);
    const keys = issue.code === "unrecognized_keys" ? issue.keys : [undefined];
    for (const key of keys) {
      const full = key === undefined ? path : [...path, key];
      const line = doc.lineOf(full);
      // zod's own message for a missing key talks of `undefined`; the operator wrote nothing.
      const message = key !== undefined
        ? "unknown key (typo?)"
        : issue.code === "invalid_type" && valueAt(doc.data, path) === undefined
        ? `required key is missing (expected ${issue.expected})`
        : issue.message;
      problems.push(`${full.join(".") || "(top level)"} (line ${line}): ${message}`);
    }
  }
  return problems;
}

function valueAt(data: unknown, path: readonly string[]): unknown {
  let value = data;
  for (const key of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function lineOf(root: Node | null, path: readonly string[], lines: LineCounter): number {
  let node: unknown = root;
  let offset = root?.range?.[0] ?? 0;
  for (const key of path) {
    if (isSeq(node)) {
      const item = node.items[Number(key)] as Node | undefined;
      if (!item?.range) break;
      offset = item.range[0];
      node = item;
      continue;
    }
    if (!isMap(node)) break;
    const pair = node.items.find((item) =>
      isPair(item) && isScalar(item.key) && String(item.key.value) === key
    );
    if (!pair) break;
    if (isScalar(pair.key) && pair.key.range) offset = pair.key.range[0];
    node = pair.value;
  }
  return lines.linePos(offset).line;
}
