/**
 * @module
 * This node's part in a cluster (docs/cluster.md): its heartbeat on the node board and what
 * it knows of the live peers, the routing of each arriving request (lib/cluster/router.ts),
 * forwarding with a signed hop header (lib/cluster/hop.ts), and checking the hop header of a
 * request a peer forwarded here.
 */
import type { Answer } from "../answer.ts";
import type { Caller } from "../auth.ts";
import type { Clock } from "../clock.ts";
import type { ClusterConfig } from "../config_types.ts";
import { messageOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type Forwarded,
  forwardToPeer,
  PeerFailedError,
  PeerUnreachableError,
  probePeer,
} from "./forward.ts";
import { type Hop, type HopRequest, HopSigner } from "./hop.ts";
import type { NodeBoard, NodeStatus } from "./node_board.ts";
import { hasLoaded, type Route, route, serves } from "./router.ts";

export interface ClusterDeps {
  config: ClusterConfig;
  board: NodeBoard;
  clock: Clock;
  log: Logger;
  /** This node's status now; with `only`, just what routing a request for that model needs. */
  status(only?: string): NodeStatus;
}

/** A model served only by peers, by the name a client used. */
export interface RemoteModel {
  id: string;
  /** The live peers that serve it. */
  nodes: string[];
}

export class Cluster {
  readonly node: string;
  readonly #deps: ClusterDeps;
  readonly #signer: HopSigner;
  /**
   * The live peers as the board last said. While the board cannot be read they stay as they
   * were: peers do not go away because Redis did (and every node answers 503 meanwhile), and
   * one that did is dropped when it does not answer a forward.
   */
  #peers: NodeStatus[] = [];
  #boardDown = false;
  /** Until then (clock ms), after an outage of the board, peers missing from it are kept. */
  #rejoinUntil = -Infinity;
  /** Another node wrote under this node's name (a copied config.yml). */
  #twinSeen = false;
  #timer: ReturnType<typeof setInterval> | null = null;
  #beating: Promise<void> | null = null;
  /** The peer each model was last sent to, and until when that counts (a lease). */
  readonly #recent = new Map<string, { node: string; until: number }>();
  /** When each peer last answered a forward (clock ms): a connection to it worked then. */
  readonly #answeredAt = new Map<string, number>();
  /** Forwards waiting for a peer's answer, per peer: aborted when the peer leaves the board. */
  readonly #waiting = new Map<string, Set<AbortController>>();

  constructor(deps: ClusterDeps) {
    this.#deps = deps;
    this.#signer = HopSigner.create(deps.config.secret);
    this.node = deps.config.node;
  }

  /** Joins: the first heartbeat is written (or its failure logged) before this resolves. */
  async start(): Promise<void> {
    await this.#beat();
    this.#timer = setInterval(() => {
      this.#beating ??= this.#beat().finally(() => this.#beating = null);
    }, this.#deps.config.heartbeatMs);
  }

  /** Leaves the board at once, so peers stop routing here before the lease would tell them. */
  async close(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.#beating;
    await this.#deps.board.leave(this.node).catch(() => {});
  }

  /** Live peers, as their last heartbeats tell. */
  peers(): readonly NodeStatus[] {
    return this.#peers;
  }

  /** This node and its live peers, this node first. */
  nodes(): NodeStatus[] {
    return [this.#deps.status(), ...this.peers()];
  }

  /**
   * Where a request for `model` goes. A cold decision (nobody has the model yet) is settled
   * through the board, so that two nodes deciding at once send it to the same node.
   */
  async routeOf(model: string): Promise<Route> {
    const { board, clock, config } = this.#deps;
    const now = clock.now();
    const recent = this.#recent.get(model);
    const self = this.#deps.status(model);
    const peers = this.peers();
    let chosen = route(model, self, peers, recent && recent.until > now ? recent.node : null);
    if (chosen.cold) {
      const want = chosen.kind === "local" ? this.node : chosen.peer.node;
      // Without the board, this node's own decision stands.
      const owner = await board.claimPlacement(model, want, config.leaseMs).catch(() => want);
      const peer = peers.find((p) => p.node === owner && serves(p, model));
      if (owner === this.node) chosen = { kind: "local", cold: false };
      else if (peer !== undefined) chosen = { kind: "peer", peer, cold: false };
    }
    if (chosen.kind === "peer") {
      this.#recent.set(model, { node: chosen.peer.node, until: now + config.leaseMs });
    }
    return chosen;
  }

  /**
   * A model this node does not serve but a live peer does, by id or alias; or null.
   */
  remoteModel(name: string): RemoteModel | null {
    let id: string | null = null;
    const nodes: string[] = [];
    for (const peer of this.peers()) {
      const model = peer.models.find((m) => m.id === name || m.aliases.includes(name));
      if (model === undefined || (id !== null && model.id !== id)) continue;
      id = model.id;
      nodes.push(peer.node);
    }
    return id === null ? null : { id, nodes };
  }

  /**
   * Sends `request` to `peer` with a hop header for `caller`. `request.signal` is the request's
   * own (it gets a listener for as long as it lives), not a long-lived one such as a shutdown's.
   * @throws {PeerUnreachableError} when the peer did not answer; it is then not routed to
   * again until its next heartbeat.
   */
  async forward(peer: NodeStatus, request: Forwarded, caller: Caller | null): Promise<Answer> {
    const now = this.#deps.clock.now();
    const hop = this.#signer.sign({ from: this.node, to: peer.node, caller }, request, now);
    // Aborts when the peer leaves the board, or with `request.signal` (a plain callback: a
    // dependent signal from AbortSignal.any costs a WeakRef and a finalizer per request).
    const left = new AbortController();
    const follow = () => left.abort(request.signal.reason);
    if (request.signal.aborted) follow();
    else request.signal.addEventListener("abort", follow, { once: true });
    const waiting = this.#waiting.get(peer.node) ?? new Set();
    this.#waiting.set(peer.node, waiting.add(left));
    try {
      // A peer that answered moments ago is reached on a pooled connection; one that has not
      // is tried first with a connect timeout (fetch has none).
      if (now - (this.#answeredAt.get(peer.node) ?? -Infinity) > this.#deps.config.leaseMs) {
        await probePeer(peer);
      }
      const answer = await forwardToPeer(peer, { ...request, signal: left.signal }, hop);
      this.#answeredAt.set(peer.node, this.#deps.clock.now());
      return answer;
    } catch (err) {
      if (left.signal.aborted && !request.signal.aborted) {
        // It may have run there: not sent anywhere else.
        throw new PeerFailedError(peer.node, left.signal.reason);
      }
      if (err instanceof PeerUnreachableError) {
        this.#peers = this.#peers.filter((p) => p.node !== peer.node);
        for (const [model, recent] of this.#recent) {
          if (recent.node === peer.node) this.#recent.delete(model);
        }
        this.#deps.log.warn("cluster_peer_unreachable", {
          node: peer.node,
          error: messageOf(err.cause),
        });
      }
      throw err;
    } finally {
      waiting.delete(left);
      if (waiting.size === 0) this.#waiting.delete(peer.node);
    }
  }

  /** Whether a hop header can be one for this node, before its request's body is read. */
  plausibleHop(header: string): boolean {
    return this.#signer.plausible(header, this.node, this.#deps.clock.now());
  }

  /** The hop a forwarded request's header vouches for, or null when it does not verify. */
  verifyHop(header: string, request: HopRequest): Hop | null {
    return this.#signer.verify(header, request, this.node, this.#deps.clock.now());
  }

  /** Whether a live peer has `model` ready or loading (the batch runner leaves it its lines). */
  peerHas(model: string): boolean {
    return this.peers().some((p) => hasLoaded(p, model));
  }

  async #beat(): Promise<void> {
    const { board, clock, config, log } = this.#deps;
    try {
      await board.publish(this.#deps.status(), config.leaseMs);
      const all = await board.live();
      const twin = all.find((n) => n.node === this.node && n.url !== config.advertiseUrl);
      if (twin !== undefined && !this.#twinSeen) {
        log.error("cluster_node_name_taken", {
          node: this.node,
          other_url: twin.url,
          note: "two nodes share cluster.node: give each its own name",
        });
      }
      this.#twinSeen = twin !== undefined;
      const live = all.filter((n) => n.node !== this.node);
      if (this.#boardDown) {
        log.info("cluster_board_back", { node: this.node });
        // Every key expired while Redis was away: peers write theirs again within a heartbeat,
        // so for a lease a peer missing from the board is still there, not gone.
        this.#rejoinUntil = clock.now() + config.leaseMs;
      }
      this.#boardDown = false;
      const missing = clock.now() < this.#rejoinUntil
        ? this.#peers.filter((p) => !live.some((n) => n.node === p.node))
        : [];
      const peers = [...live, ...missing];
      this.#tellChanges(peers);
      this.#peers = peers;
    } catch (err) {
      if (!this.#boardDown) log.warn("cluster_board_unreachable", { error: messageOf(err) });
      this.#boardDown = true;
    }
  }

  #tellChanges(live: readonly NodeStatus[]): void {
    const before = new Set(this.#peers.map((p) => p.node));
    const now = new Set(live.map((p) => p.node));
    for (const peer of live) {
      if (!before.has(peer.node)) {
        this.#deps.log.info("cluster_node_joined", { node: peer.node, url: peer.url });
      }
    }
    for (const node of before) {
      if (now.has(node)) continue;
      this.#deps.log.warn("cluster_node_left", { node });
      // Its lease ran out: a request waiting for its answer would wait for request_timeout.
      for (const forward of this.#waiting.get(node) ?? []) {
        forward.abort(new Error("it left the cluster (its heartbeat lease ran out)"));
      }
    }
  }
}
