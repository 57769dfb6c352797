/**
 * @module
 * A real headless Chromium driven by playwright-core, for tests of what an operator sees.
 * Uses the system's browser (Debian's `chromium`); a missing one is a failure with an install
 * hint, never a skip.
 */
import { type Browser, chromium } from "playwright-core";

const CANDIDATES = [
  Deno.env.get("CHROMIUM_PATH"),
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
].filter((p): p is string => p !== undefined && p !== "");

/** Where tests save screenshots for a person to look at (ignored by git). */
export const SCREENSHOT_DIR = new URL("../../test-output/", import.meta.url);

async function findChromium(): Promise<string> {
  for (const path of CANDIDATES) {
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch {
      // try the next one
    }
  }
  throw new Error(
    `No Chromium found (looked at ${CANDIDATES.join(", ")}). These tests drive a real ` +
      "browser: install it with `apt-get install -y chromium` (or set CHROMIUM_PATH). " +
      "`bash .ci/run` does this.",
  );
}

export interface TestBrowser extends AsyncDisposable {
  browser: Browser;
}

export async function launchBrowser(): Promise<TestBrowser> {
  const browser = await chromium.launch({
    executablePath: await findChromium(),
    // Tests run as root in CI, where Chromium's sandbox cannot start.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  return { browser, [Symbol.asyncDispose]: () => browser.close() };
}

/** Saves a full-page screenshot under test-output/ and returns its path. */
export async function saveScreenshot(
  page: { screenshot(options: { path: string; fullPage: boolean }): Promise<unknown> },
  name: string,
): Promise<string> {
  await Deno.mkdir(SCREENSHOT_DIR, { recursive: true });
  const path = new URL(name, SCREENSHOT_DIR).pathname;
  await page.screenshot({ path, fullPage: true });
  return path;
}
