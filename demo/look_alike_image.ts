/**
 * @module
 * The llama-server look-alike as a container, for the demo and the tests: its image, built
 * with the Engine's import endpoint (no registry needed) from a tarball holding the running
 * deno binary, the shared libraries it links, and look_alike.ts (tagged by content hash, so
 * it is built once per change), and the command and environment that run it.
 */
import type { DockerApi } from "../lib/docker.ts";
import { shortHash } from "../lib/short_hash.ts";

const SCRIPT_URL = new URL("./look_alike.ts", import.meta.url);
const REPO = "lqp-look-alike";

/** The port the look-alike listens on inside its container. */
export const LOOK_ALIKE_PORT = 8080;

/** How one look-alike behaves (see look_alike.ts). */
export interface LookAlikeSettings {
  /** The model name it answers with. */
  alias: string;
  loadMs?: number;
  mode?: "normal" | "exit" | "never";
  slots?: number;
  tokenMs?: number;
  /** Keep a log of received requests for `/_fake/state`. */
  record?: boolean;
  /**
   * Notice a client's close through a relay in front of the server (default), as llama-server
   * does; benchmarks turn it off so the backend costs what Deno.serve alone does.
   */
  watch?: boolean;
  /** How long a slot save / restore takes (ms), and prompt processing per uncached token (µs). */
  slotSaveMs?: number;
  slotRestoreMs?: number;
  promptUs?: number;
}

/** The container's command (the image has no entrypoint). */
export const LOOK_ALIKE_COMMAND: readonly string[] = [
  "/deno",
  "run",
  "--unstable-no-legacy-abort",
  "--allow-net",
  "--allow-env",
  // /tmp for its crash marker; anywhere for --slot-save-path (a volume the proxy mounts).
  "--allow-read",
  "--allow-write",
  "/look_alike.ts",
];

export function lookAlikeEnv(settings: LookAlikeSettings): Record<string, string> {
  return {
    DENO_DIR: "/tmp/deno",
    HOME: "/tmp",
    DENO_NO_UPDATE_CHECK: "1",
    FAKE_ALIAS: settings.alias,
    FAKE_LOAD_MS: String(settings.loadMs ?? 150),
    FAKE_MODE: settings.mode ?? "normal",
    FAKE_SLOTS: String(settings.slots ?? 2),
    FAKE_TOKEN_MS: String(settings.tokenMs ?? 2),
    FAKE_RECORD: settings.record === false ? "0" : "1",
    FAKE_WATCH: settings.watch === false ? "0" : "1",
    FAKE_SLOT_SAVE_MS: String(settings.slotSaveMs ?? 0),
    FAKE_SLOT_RESTORE_MS: String(settings.slotRestoreMs ?? 0),
    FAKE_PROMPT_US: String(settings.promptUs ?? 0),
  };
}

/** The script and the deno binary it runs on make the image. */
function contentTag(script: Uint8Array): Promise<string> {
  const version = new TextEncoder().encode(Deno.version.deno);
  return shortHash(new Uint8Array([...script, ...version]));
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Libraries the deno binary links, as absolute paths (from ldd). */
async function linkedLibraries(binary: string): Promise<string[]> {
  const text = await run("ldd", [binary]);
  return [...text.matchAll(/(\/\S+)\s+\(0x/g)].map((m) => m[1]);
}

/** Returns the image reference, importing the image first if this content is new. */
export async function ensureLookAlikeImage(api: DockerApi): Promise<string> {
  const script = await Deno.readFile(SCRIPT_URL);
  const ref = `${REPO}:${await contentTag(script)}`;
  const existing = await api.request("GET", `/images/${encodeURIComponent(ref)}/json`);
  await existing.body?.cancel();
  if (existing.ok) return ref;

  const root = await Deno.makeTempDir({ prefix: "lqp-image-" });
  try {
    await Deno.mkdir(`${root}/tmp`, { mode: 0o1777 });
    await Deno.chmod(`${root}/tmp`, 0o1777);
    await Deno.copyFile(Deno.execPath(), `${root}/deno`);
    await Deno.writeFile(`${root}/look_alike.ts`, script);
    for (const lib of await linkedLibraries(Deno.execPath())) {
      const target = `${root}${lib}`;
      await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
      await Deno.copyFile(await Deno.realPath(lib), target);
    }
    const tarPath = `${root}.tar`;
    await run("tar", ["-C", root, "-cf", tarPath, "."]);
    const [repo, tag] = ref.split(":");
    using tar = await Deno.open(tarPath);
    const res = await api.call(
      "POST",
      `/images/create?fromSrc=-&repo=${repo}&tag=${tag}`,
      { body: tar.readable, headers: { "content-type": "application/x-tar" } },
    );
    const log = await res.text();
    if (/"error"/.test(log)) throw new Error(`docker import of ${ref} failed: ${log}`);
    await Deno.remove(tarPath);
    return ref;
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}
