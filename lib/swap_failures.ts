/**
 * @module
 * What a failed swap tells its clients: the error types, and the wording built from what
 * Docker and the container's log say (the log tail is quoted, a half-started container is
 * stopped). The model manager throws these; `swapFailureError` is the one place that turns
 * them into what the clients are answered.
 */
import type { ModelConfig } from "./config_types.ts";
import {
  ContainerNotFoundError,
  type Docker,
  DockerApiError,
  DockerUnavailableError,
} from "./docker.ts";
import { type ApiError, messageOf, modelUnavailable, type SwapFailureCode } from "./errors.ts";

/** A swap that did not end with a healthy model; the message is meant for the client. */
export class SwapFailedError extends Error {
  constructor(readonly model: string, readonly code: SwapFailureCode, message: string) {
    super(message);
    this.name = "SwapFailedError";
  }
}

/**
 * The 503 for the clients of a swap to `model` that failed with `err`: a SwapFailedError's
 * code and message, anything else a `model_load_failed`.
 */
export function swapFailureError(model: string, err: unknown): ApiError {
  return err instanceof SwapFailedError
    ? modelUnavailable(err.code, err.message, err)
    : modelUnavailable("model_load_failed", `Model '${model}' failed to load: ${err}`, err);
}

/** The container died while we waited for it to become healthy. */
export class ContainerExitedError extends Error {
  /** `killed`: ended by SIGKILL or SIGTERM from outside, not by itself or the OOM killer. */
  constructor(message: string, readonly killed: boolean) {
    super(message);
  }
}

/** Exit codes of a process ended by SIGKILL or SIGTERM: someone else stopped it. */
const KILLED_EXIT_CODES = new Set([137, 143]);

/** @throws {ContainerExitedError} when `model`'s container is no longer running. */
export async function assertRunning(docker: Docker, model: ModelConfig): Promise<void> {
  const state = await docker.inspect(model.containerName);
  if (state.running) return;
  const reason = state.oomKilled ? ", killed by the OOM killer" : "";
  const detail = state.error ? ` (${state.error})` : "";
  throw new ContainerExitedError(
    `Model '${model.id}' failed to start: container ${model.containerName} is ${state.status} ` +
      `with exit code ${state.exitCode}${reason}${detail}`,
    KILLED_EXIT_CODES.has(state.exitCode) && !state.oomKilled,
  );
}

/** Turns any swap error into the client's message, stopping a half-started container. */
export async function describeFailure(
  docker: Docker,
  model: ModelConfig,
  err: unknown,
  { logTailLines, stopTimeoutS }: { logTailLines: number; stopTimeoutS: number },
): Promise<SwapFailedError> {
  if (err instanceof ContainerNotFoundError) {
    return new SwapFailedError(
      model.id,
      "container_not_found",
      `${err.message} (model '${model.id}'). Create it first with docker create --name ${err.container} ..., or give the model a container: block in config.yml so the proxy creates it`,
    );
  }
  if (err instanceof DockerUnavailableError) {
    return new SwapFailedError(model.id, "docker_unavailable", err.message);
  }
  if (err instanceof DockerApiError && /no such image/i.test(err.message)) {
    return new SwapFailedError(
      model.id,
      "model_load_failed",
      `Model '${model.id}' cannot be created: Docker said: ${err.message}. ` +
        `The proxy does not pull images; run docker pull ${model.container?.image} first`,
    );
  }
  const base = messageOf(err);
  const message = err instanceof SwapFailedError || err instanceof ContainerExitedError
    ? base
    : `Model '${model.id}' failed to start: Docker said: ${base}`;
  const tail = await docker.logTail(model.containerName, logTailLines).catch(() => "");
  await docker.stop(model.containerName, stopTimeoutS).catch(() => {});
  const logPart = tail.trim()
    ? `. Last log lines of ${model.containerName}:\n${tail.trimEnd()}`
    : "";
  return new SwapFailedError(model.id, "model_load_failed", message + logPart);
}
