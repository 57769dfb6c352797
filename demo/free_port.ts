/**
 * @module
 * A TCP port nothing listens on right now, for something that will bind it a moment later
 * (a container's published port, a test server).
 */

/** Ports the kernel hands out for outgoing connections; Linux's default when unreadable. */
function ephemeralRange(): [number, number] {
  try {
    const [low, high] = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range")
      .trim().split(/\s+/).map(Number);
    if (low > 0 && high >= low) return [low, high];
  } catch {
    // not Linux, or no permission: assume the default
  }
  return [32768, 60999];
}

/**
 * Ports fetch refuses to connect to (the Fetch standard's "bad ports"); of that list, only
 * 10080 is in the range picked from. A test server there could never be reached.
 */
const FETCH_BAD_PORTS = new Set([10080]);

/**
 * Picked below the ephemeral range: a port the OS chose (bind to 0) can be handed to an
 * outgoing connection before the container binds it, and Docker then fails with "port is
 * already allocated".
 */
/** Read once: the range does not change while a test run lasts. */
const [EPHEMERAL_LOW] = ephemeralRange();

export function freePort(): number {
  const low = EPHEMERAL_LOW;
  const floor = 10_000;
  for (let tries = 0; tries < 200; tries++) {
    const port = floor + Math.floor(Math.random() * (low - floor));
    if (FETCH_BAD_PORTS.has(port)) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken: try another
    }
  }
  throw new Error(`No free TCP port found between ${floor} and ${low}`);
}
