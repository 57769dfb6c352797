/**
 * @module
 * Prometheus text exposition (format 0.0.4) for `/metrics` when a scraper asks for it:
 * labelled counters and histograms, rendered on demand. No I/O, no dependencies.
 */

export type Labels = Record<string, string>;

const SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) =>
    `${k}="${v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"')}"`
  );
  return parts.length ? `{${parts.join(",")}}` : "";
}

/**
 * Adds one label to every sample of a rendered page (a cluster's `node`), so that the series of
 * several nodes scraped into one Prometheus stay apart.
 */
export function withLabel(lines: readonly string[], name: string, value: string): string[] {
  const label = labelText({ [name]: value }).slice(1, -1);
  return lines.map((line) => {
    if (line.startsWith("#")) return line;
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    if (brace !== -1 && brace < space) {
      const rest = line.slice(brace + 1);
      return `${line.slice(0, brace + 1)}${label}${rest.startsWith("}") ? "" : ","}${rest}`;
    }
    return `${line.slice(0, space)}{${label}}${line.slice(space)}`;
  });
}

/** The series' key: label values in name order (callers name labels, never build them). */
function keyOf(labels: Labels): string {
  const names = Object.keys(labels);
  if (names.length > 1) names.sort();
  let key = "";
  for (const name of names) key += `${name}\u0000${labels[name]}\u0000`;
  return key;
}

export class Counter {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = keyOf(labels);
    const entry = this.#values.get(key) ?? { labels, value: 0 };
    entry.value += by;
    this.#values.set(key, entry);
  }

  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const { labels, value } of this.#values.values()) {
      lines.push(`${this.name}${labelText(labels)} ${value}`);
    }
    return lines;
  }
}

export class Histogram {
  readonly #series = new Map<
    string,
    { labels: Labels; counts: number[]; sum: number; n: number }
  >();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[] = SECONDS_BUCKETS,
  ) {}

  observe(labels: Labels, value: number): void {
    const key = keyOf(labels);
    let series = this.#series.get(key);
    if (!series) {
      series = { labels, counts: this.buckets.map(() => 0), sum: 0, n: 0 };
      this.#series.set(key, series);
    }
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= this.buckets[i]) series.counts[i]++;
    }
    series.sum += value;
    series.n++;
  }

  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const { labels, counts, sum, n } of this.#series.values()) {
      this.buckets.forEach((bound, i) => {
        lines.push(
          `${this.name}_bucket${labelText({ ...labels, le: String(bound) })} ${counts[i]}`,
        );
      });
      lines.push(`${this.name}_bucket${labelText({ ...labels, le: "+Inf" })} ${n}`);
      lines.push(`${this.name}_sum${labelText(labels)} ${sum}`);
      lines.push(`${this.name}_count${labelText(labels)} ${n}`);
    }
    return lines;
  }
}

/** A gauge read at scrape time. */
export function gauge(name: string, help: string, samples: [Labels, number][]): string[] {
  return [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} gauge`,
    ...samples.map(([labels, value]) => `${name}${labelText(labels)} ${value}`),
  ];
}

/** A counter kept elsewhere as one number, read at scrape time. */
export function counter(name: string, help: string, value: number): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${value}`];
}

/** Whether the client asked for Prometheus text rather than the seed's JSON. */
export function wantsPrometheus(accept: string | null, format: string | undefined): boolean {
  if (format !== undefined) return format === "prometheus";
  return /application\/openmetrics-text|text\/plain/i.test(accept ?? "");
}
