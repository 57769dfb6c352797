/**
 * @module
 * One process at a time per KV file: an exclusive lock on a file beside it. The kernel lets go
 * of it when the process ends however it ends (kill -9 included), so a proxy that finds it
 * free knows every other proxy that ever used the file is gone, whatever leases they left.
 */

/** Another live process holds the KV file this proxy was told to use. */
export class StoreInUseError extends Error {
  constructor(path: string) {
    super(
      `store.path ${path} is in use by another proxy (it holds ${lockPathOf(path)}). A KV ` +
        "file serves one proxy: stop the other one, give this one its own store.path, or " +
        "share a Redis store between them (docs/cluster.md).",
    );
    this.name = "StoreInUseError";
  }
}

export function lockPathOf(storePath: string): string {
  return `${storePath}.lock`;
}

/**
 * Takes the lock of the KV file at `storePath` and holds it until the returned file is closed.
 * The lock file stays: removing it would let a process that opened it a moment earlier lock
 * a file no one else can see any more, beside a new one someone else locked.
 * @throws StoreInUseError when another process holds it.
 */
export async function lockStoreFile(storePath: string): Promise<Deno.FsFile> {
  const file = await Deno.open(lockPathOf(storePath), { create: true, write: true });
  try {
    if (!await file.tryLock(true)) throw new StoreInUseError(storePath);
  } catch (err) {
    file.close();
    throw err;
  }
  return file;
}
