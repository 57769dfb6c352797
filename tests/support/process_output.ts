/**
 * @module
 * A child process whose stdout and stderr are collected as they arrive, for tests that read
 * what a process prints. Disposing it kills it if it still runs and waits until it is gone.
 */

export interface WatchedProcess extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** Everything printed so far, both streams in arrival order. */
  readonly output: string;
}

/** `child` must have been spawned with `stdout: "piped"` and `stderr: "piped"`. */
export function watchOutput(child: Deno.ChildProcess): WatchedProcess {
  const decoder = new TextDecoder();
  let output = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output += decoder.decode(chunk, { stream: true });
  };
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  return {
    child,
    get output() {
      return output;
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
      await reading;
    },
  };
}
