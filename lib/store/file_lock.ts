/**
 * @module
 * One process at a time per KV file: an exclusive lock on a file beside it. The kernel lets go
 * of it when the process ends however it ends (kill -9 included), so a proxy that finds it
 * free knows every other proxy that ever used the file is gone, whatever leases they left.
 */

/** Another live process holds the KV file this proxy was told to use. */
export class StoreInUseError extends Error {
  constructor(path: string, lockPath: string) {
    super(
      `store.path ${path} is in use by another proxy (it holds ${lockPath}). A KV ` +
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
 * The lock sits beside the file's real path, so that two names for one file (a symlink) share
 * one lock. The lock file stays: removing it would let a process that opened it a moment
 * earlier lock a file no one else can see any more, beside a new one someone else locked.
 * @throws StoreInUseError when another process holds it.
 */
export async function lockStoreFile(storePath: string): Promise<Deno.FsFile> {
  const real = await Deno.realPath(storePath).catch(() => storePath);
  const file = await Deno.open(lockPathOf(real), { create: true, write: true });
  let locked: boolean;
  try {
    locked = await file.tryLock(true);
  } catch (err) {
    file.close();
    throw new Error(
      `cannot lock ${lockPathOf(real)} (${err}): the KV store needs a file system with ` +
        "file locks (flock); use a local disk for store.path, or a Redis store",
    );
  }
  if (!locked) {
    file.close();
    throw new StoreInUseError(storePath, lockPathOf(real));
  }
  return file;
}
