/**
 * @module
 * A rejected config's problem lines, for tests that check what the operator is told.
 */
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../lib/config.ts";
import type { KeyFileReader } from "../../lib/config_api_keys.ts";
import type { ConfigEnv } from "../../lib/config_env.ts";

/** The problems parseConfig() reports for `text`; fails the test if the config is accepted. */
export function problemsOf(
  text: string,
  env: ConfigEnv = {},
  readKeyFile?: KeyFileReader,
): readonly string[] {
  try {
    parseConfig(text, "config.yml", env, readKeyFile);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.problems;
  }
  assert.fail("config was accepted");
}
