/**
 * @module
 * Containers the proxy creates itself, from a model's `container:` block: created when
 * missing, and anew when the block changed since the proxy created it (never while it runs).
 * Without a block, a missing container stays the operator's to create.
 */
import type { ModelConfig } from "./config_types.ts";
import { ContainerNotFoundError, type ContainerState, type Docker } from "./docker.ts";
import { createRequest, MANAGED_LABEL, SPEC_LABEL, specDigest } from "./container_spec.ts";
import type { Logger } from "./log.ts";

/**
 * Makes sure `model`'s container exists as its config describes it.
 * @throws {ContainerNotFoundError} when it is missing and config has no block for it.
 */
export async function ensureContainer(
  docker: Docker,
  model: ModelConfig,
  log: Logger,
): Promise<void> {
  let state: ContainerState | null = null;
  try {
    state = await docker.inspect(model.containerName);
  } catch (err) {
    if (!(err instanceof ContainerNotFoundError) || model.container === null) throw err;
  }
  if (model.container === null) return;
  const digest = await specDigest(model.container);
  if (state !== null) {
    const outdated = state.labels[MANAGED_LABEL] === "true" &&
      state.labels[SPEC_LABEL] !== digest;
    if (!outdated) return;
    if (state.running) {
      // Never cut a model off under its users; the next start gets the new container.
      log.warn("container_outdated", {
        model: model.id,
        container: model.containerName,
        note: "its container block changed; it is created anew the next time it starts",
      });
      return;
    }
    await docker.remove(model.containerName);
    log.info("container_removed", {
      model: model.id,
      container: model.containerName,
      reason: "its container block changed",
    });
  }
  await docker.create(model.containerName, createRequest(model.container, model.id, digest));
  log.info("container_created", {
    model: model.id,
    container: model.containerName,
    image: model.container.image,
  });
}
