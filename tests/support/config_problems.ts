/** The problems parseConfig() reports for `text`; fails the test if the config is accepted. */
import assert from "node:assert/strict";
import { type ConfigEnv, ConfigError, type KeyFileReader, parseConfig } from "../../lib/config.ts";

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
