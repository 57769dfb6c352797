/**
 * The code base's own rules, checked so that they stay true: every module is on the layout map a
 * newcomer reads (docs/development.md), a module over 350 lines says why at its top, and imports
 * flow one way (lib/ never imports routes/ or Hono).
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);

async function modules(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(new URL(dir, ROOT))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...await modules(path));
    else if (entry.name.endsWith(".ts")) found.push(path);
  }
  return found.sort();
}

const read = (path: string) => Deno.readTextFile(new URL(path, ROOT));

Deno.test("docs/development.md's layout names every module under lib/ and routes/", async () => {
  const doc = await read("docs/development.md");
  const layout = doc.slice(doc.indexOf("## Layout"), doc.indexOf("## How a request flows"));
  const words = new Set(layout.split(/[^A-Za-z0-9_.]+/));
  const missing = [...await modules("lib"), ...await modules("routes")]
    .map((path) => path.split("/").at(-1)!)
    .filter((file) => !words.has(file.replace(/\.ts$/, "")) && !words.has(file));
  assert.deepEqual(missing, []);
});

Deno.test("every module over 350 lines says why at its top", async () => {
  const unexplained: string[] = [];
  for (const path of ["main.ts", ...await modules("lib"), ...await modules("routes")]) {
    const text = await read(path);
    const opening = text.slice(0, text.indexOf("*/"));
    if (text.split("\n").length > 350 && !/Over 350 lines/.test(opening)) unexplained.push(path);
  }
  assert.deepEqual(unexplained, []);
});

Deno.test("lib/ never imports routes/ or Hono", async () => {
  const offending: string[] = [];
  for (const path of await modules("lib")) {
    for (const [, target] of (await read(path)).matchAll(/\bfrom "([^"]+)";/g)) {
      if (target === "hono" || /(^|\/)routes\//.test(target)) offending.push(`${path}: ${target}`);
    }
  }
  assert.deepEqual(offending, []);
});

Deno.test("the README stays the operator's page (at most 300 lines), and every relative link in it and docs/ leads to a file", async () => {
  const readme = await read("README.md");
  assert.ok(readme.split("\n").length <= 300, `README.md has ${readme.split("\n").length} lines`);
  const broken: string[] = [];
  const docs = [...Deno.readDirSync(new URL("docs", ROOT))].filter((e) => e.name.endsWith(".md"));
  for (const page of ["README.md", ...docs.map((e) => `docs/${e.name}`)]) {
    const dir = page.includes("/") ? page.slice(0, page.lastIndexOf("/") + 1) : "";
    for (const [, target] of (await read(page)).matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
      if (/^[a-z]+:/.test(target)) continue; // http:, mailto:
      const exists = await Deno.stat(new URL(dir + target, ROOT)).then(() => true, () => false);
      if (!exists) broken.push(`${page}: ${target}`);
    }
  }
  assert.deepEqual(broken, []);
});
