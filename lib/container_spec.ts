/**
 * @module
 * A model's optional `container:` block, and the Docker create request it stands for, so the
 * proxy can create a missing container itself instead of the operator running
 * `docker create`. Pure: the Docker client sends what this builds.
 */
import { shortHash } from "./short_hash.ts";

export interface ContainerSpec {
  image: string;
  /** Arguments (Docker's Cmd); with llama.cpp server images, llama-server's flags. */
  command: readonly string[];
  entrypoint: readonly string[] | null;
  /** `[ip:]host:container[/proto]`. */
  ports: readonly string[];
  /** `host:container[:ro]`. */
  volumes: readonly string[];
  /** `/dev/x` or `/dev/x:/dev/y`. */
  devices: readonly string[];
  env: Readonly<Record<string, string>>;
  /** NVIDIA GPUs: all, how many, or which ids; null for none. */
  gpus: "all" | number | readonly string[] | null;
  groupAdd: readonly string[];
  labels: Readonly<Record<string, string>>;
}

/** Labels the proxy puts on containers it created. */
export const MANAGED_LABEL = "lqp.managed";
export const MODEL_LABEL = "lqp.model";
/** Digest of the spec a container was created from: a changed spec means a new container. */
export const SPEC_LABEL = "lqp.spec";

export const PORT_PATTERN =
  /^(?:(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/;
export const VOLUME_PATTERN = /^[^:]+:\/[^:]*(?::(ro|rw|z|Z|ro,z|ro,Z))?$/;
export const DEVICE_PATTERN = /^\/dev\/[^:]+(?::\/dev\/[^:]+)?(?::[rwm]+)?$/;

/** A short, stable digest of what the container is made from. */
export function specDigest(spec: ContainerSpec): Promise<string> {
  return shortHash(new TextEncoder().encode(JSON.stringify(spec)));
}

function portBindings(ports: readonly string[]) {
  const exposed: Record<string, Record<string, never>> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const port of ports) {
    const [, ip, host, container, proto] = PORT_PATTERN.exec(port)!;
    const key = `${container}/${proto ?? "tcp"}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostIp: (ip ?? "").replace(/^\[|\]$/g, ""), HostPort: host });
  }
  return { exposed, bindings };
}

function deviceMappings(devices: readonly string[]) {
  return devices.map((device) => {
    const [host, inContainer, permissions] = device.split(":");
    return {
      PathOnHost: host,
      PathInContainer: inContainer ?? host,
      CgroupPermissions: permissions ?? "rwm",
    };
  });
}

function gpuRequests(gpus: ContainerSpec["gpus"]) {
  if (gpus === null) return undefined;
  // What `docker run --gpus …` sends: any driver that offers the gpu capability.
  const base = { Driver: "", Capabilities: [["gpu"]], Options: {} };
  if (gpus === "all") return [{ ...base, Count: -1 }];
  if (typeof gpus === "number") return [{ ...base, Count: gpus }];
  return [{ ...base, DeviceIDs: [...gpus] }];
}

/** The body of `POST /containers/create?name=…` for one model. */
export function createRequest(spec: ContainerSpec, model: string, digest: string) {
  const { exposed, bindings } = portBindings(spec.ports);
  return {
    Image: spec.image,
    Cmd: spec.command.length > 0 ? [...spec.command] : undefined,
    Entrypoint: spec.entrypoint === null ? undefined : [...spec.entrypoint],
    Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
    Labels: { ...spec.labels, [MANAGED_LABEL]: "true", [MODEL_LABEL]: model, [SPEC_LABEL]: digest },
    ExposedPorts: exposed,
    HostConfig: {
      PortBindings: bindings,
      Binds: [...spec.volumes],
      Devices: deviceMappings(spec.devices),
      DeviceRequests: gpuRequests(spec.gpus),
      GroupAdd: spec.groupAdd.length > 0 ? [...spec.groupAdd] : undefined,
      // The proxy decides when it runs; Docker must not bring it back on its own.
      RestartPolicy: { Name: "no" },
    },
  };
}
