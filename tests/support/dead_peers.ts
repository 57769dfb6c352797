/**
 * @module
 * Peers that went away without a word, as a cluster node sees them on a LAN: a host that is
 * gone (a connection to it never completes: no RST, the SYN is dropped) and a node process
 * that takes requests and never answers (hung, or its host died with the connection open).
 */

/** A Python listener with a full accept queue: the kernel drops every further SYN. */
const BLACKHOLE_PY = `
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
fill = socket.create_connection(("127.0.0.1", s.getsockname()[1]))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;

/** An address whose connections never complete, until disposed. */
export async function blackhole(): Promise<{ url: string } & AsyncDisposable> {
  const child = new Deno.Command("python3", {
    args: ["-c", BLACKHOLE_PY],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  const port = Number(value?.trim());
  if (!Number.isInteger(port) || port <= 0) {
    throw new Error(`the blackhole listener did not start (python3 said '${value}')`);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      await child.stdin.close();
      await reader.cancel();
      await child.status;
    },
  };
}

/** A server that accepts connections and reads requests but never answers, until disposed. */
export function silentPeer(): { url: string; requests: number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  /** Connections that sent something (a connection alone may be a reachability check). */
  let requests = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      let spoke = false;
      // Read and drop whatever comes, so the sender's writes never block.
      conn.readable.pipeTo(
        new WritableStream({
          write() {
            if (!spoke) requests++;
            spoke = true;
          },
        }),
      ).catch(() => {});
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    get requests() {
      return requests;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed already by its reader
        }
      }
      await accepting;
    },
  };
}
