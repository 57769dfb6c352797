/**
 * @module
 * A short content hash (the first 8 bytes of SHA-256, in hex) for names and labels that must
 * change exactly when what they stand for changes: image tags, container spec labels.
 */
export async function shortHash(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}
