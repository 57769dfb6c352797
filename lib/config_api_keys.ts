/**
 * @module
 * config.yml's `api_keys:` resolved: each `key_file` read and checked like an inline key, and
 * names and keys checked to be unique.
 */
import type { ApiKeyConfig } from "./auth.ts";
import { accessKey, type ParsedConfig } from "./config_schema.ts";
import { messageOf } from "./errors.ts";
import type { LineLocator } from "./yaml_problems.ts";

/** Reads a `key_file`; injected so parsing stays free of I/O. */
export type KeyFileReader = (path: string) => string;

/** Reads key files and checks that names and keys are unique. */
export function resolveKeys(
  keys: ParsedConfig["api_keys"],
  readKeyFile: KeyFileReader,
  problems: string[],
  lineOf: LineLocator,
): ApiKeyConfig[] {
  const names = new Set<string>();
  const secrets = new Set<string>();
  const resolved: ApiKeyConfig[] = [];
  keys.forEach((entry, index) => {
    const line = (field: string) => lineOf(["api_keys", String(index), field]);
    let key = entry.key;
    if (entry.key_file !== undefined) {
      try {
        const parsed = accessKey.safeParse(readKeyFile(entry.key_file));
        if (parsed.success) key = parsed.data;
        else {
          problems.push(
            `api_keys.${index}.key_file (line ${line("key_file")}): ${
              parsed.error.issues[0].message
            }`,
          );
        }
      } catch (err) {
        problems.push(
          `api_keys.${index}.key_file (line ${line("key_file")}): cannot read ${entry.key_file} (${
            messageOf(err)
          })`,
        );
      }
    }
    if (names.has(entry.name)) {
      problems.push(`api_keys.${index}.name (line ${line("name")}): '${entry.name}' is used twice`);
    }
    if (key !== undefined && secrets.has(key)) {
      problems.push(`api_keys.${index}.key (line ${line("key")}): the same key is listed twice`);
    }
    names.add(entry.name);
    if (key !== undefined) {
      secrets.add(key);
      resolved.push({ name: entry.name, key, priority: entry.priority });
    }
  });
  return resolved;
}
