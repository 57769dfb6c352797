/**
 * @module
 * Keeps the resident set true when someone else moves a container: a configured container
 * started by hand while other models run (or start) is stopped again, and a resident whose
 * container stopped or stopped answering is forgotten, so the next request starts it again.
 * Follows Docker's event stream; after Docker restarts it reconnects and has the swap manager
 * reconcile.
 */
import type { ModelConfig } from "./config_types.ts";
import type { ContainerEvent, Docker } from "./docker.ts";
import { messageOf } from "./errors.ts";
import { delay, probe } from "./health.ts";
import type { Logger } from "./log.ts";
import type { ResidentSet } from "./residents.ts";

/** What drift watching needs of the swap manager. */
export interface DriftHost {
  readonly residents: ResidentSet;
  /** The configured model a container belongs to (the config in force). */
  ownerOf(container: string): ModelConfig | undefined;
  modelOf(id: string): ModelConfig | undefined;
  /** A placement, unload or reconcile holds or waits for the swap lock. */
  busy(): boolean;
  /** Adopts what runs after Docker came back. */
  reconcile(): Promise<void>;
  stop(container: string): Promise<void>;
}

export class ContainerDrift {
  readonly #docker: Docker;
  readonly #log: Logger;
  readonly #host: DriftHost;

  constructor(docker: Docker, log: Logger, host: DriftHost) {
    this.#docker = docker;
    this.#log = log;
    this.#host = host;
  }

  /** Follows Docker's events until `signal` aborts, reconnecting after Docker restarts. */
  async watch(signal: AbortSignal): Promise<void> {
    let delayMs = 250;
    while (!signal.aborted) {
      try {
        const events = this.#docker.events(signal);
        if (delayMs > 250) await this.#host.reconcile(); // Docker came back: see what survived
        delayMs = 250;
        for await (const event of events) await this.#onEvent(event);
      } catch (err) {
        if (signal.aborted) return;
        this.#log.warn("docker_events_lost", { error: messageOf(err) });
      }
      await delay(delayMs, signal).catch(() => {});
      delayMs = Math.min(delayMs * 2, 5000);
    }
  }

  /**
   * A forward to `modelId` failed before any byte came back. If its container is no longer
   * running, forget that it is loaded so the next request starts it again.
   */
  async reportUnreachable(modelId: string): Promise<void> {
    const residents = this.#host.residents;
    const model = this.#host.modelOf(modelId);
    if (!model || residents.phaseOf(modelId) !== "ready") return;
    // A process that just died is still "running" to Docker for a moment: wait for its state
    // to settle (or for the backend to answer again) before deciding. Real time, as the waits
    // in between are: a test's frozen clock must not make this loop for ever.
    const deadline = performance.now() + 2000;
    while (residents.phaseOf(modelId) === "ready" && performance.now() < deadline) {
      const running = await this.#docker.inspect(model.containerName).then(
        (state) => state.running,
        () => false,
      );
      if (!running) {
        this.#log.warn("backend_gone", { model: modelId, container: model.containerName });
        return residents.forget(modelId);
      }
      const answers = await probe(model.healthUrl, AbortSignal.timeout(200))
        .then((answer) => answer.ready, () => false);
      if (answers) return;
      await delay(50);
    }
  }

  async #onEvent(event: ContainerEvent): Promise<void> {
    const model = this.#host.ownerOf(event.name);
    if (!model) return;
    const residents = this.#host.residents;
    const phase = residents.phaseOf(model.id);
    if (event.action === "start" && phase === "stopped") {
      // Started by hand: it may not fit beside the residents, so it goes unless nothing runs.
      if (residents.size === 0 && !this.#host.busy()) return;
      this.#log.warn("foreign_start_stopped", {
        container: event.name,
        resident: residents.ids().join(","),
      });
      await this.#host.stop(event.name).catch(() => {});
    } else if (event.action !== "start" && (phase === "ready" || phase === "draining")) {
      this.#log.warn("backend_gone", { model: model.id, container: event.name });
      residents.forget(model.id);
    }
  }
}
