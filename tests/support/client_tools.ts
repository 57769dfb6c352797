/**
 * @module
 * Where the real client libraries live that the disconnect tests drive (installed by
 * tests/clients/install.ts, which `deno task test` runs first), and a check that fails with
 * what to install when they are missing.
 */
const root = new URL("../../", import.meta.url).pathname;
const clients = `${root}tests/clients/`;

export const CLIENT_TOOLS = {
  venv: `${root}.venv`,
  python: `${root}.venv/bin/python`,
  pythonScript: `${clients}cancel_client.py`,
  nodeScript: `${clients}cancel_client.mjs`,
  pythonUpload: `${clients}upload_client.py`,
  nodeUpload: `${clients}upload_client.mjs`,
  nodeModules: `${clients}node_modules`,
  hint: "The client tests need python3 with venv (apt-get install -y python3-venv), Node.js " +
    "with npm (apt-get install -y nodejs npm) and curl; then `deno run -A " +
    "tests/clients/install.ts` (run by `deno task test`) installs the pinned clients.",
};

/** Throws an error saying what to install when a client library is missing. */
export async function requireClientTools(): Promise<void> {
  for (const path of [CLIENT_TOOLS.python, `${CLIENT_TOOLS.nodeModules}/openai/package.json`]) {
    try {
      await Deno.stat(path);
    } catch {
      throw new Error(`Missing ${path}. ${CLIENT_TOOLS.hint}`);
    }
  }
}
