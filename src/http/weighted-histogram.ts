import type { Metric, Registry } from 'prom-client';

/**
 * A Prometheus histogram that takes one observation for many events at once: the publish path
 * times one publish per batch and counts the whole batch (docs/performance.md, "Metrics"). Its
 * exposition is prom-client's Histogram's (`_bucket` cumulative per `le`, `+Inf`, `_sum`,
 * `_count`; https://prometheus.io/docs/concepts/metric_types/#histogram); prom-client's own
 * Histogram has no weighted observe.
 */
export class WeightedHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly upperBounds: readonly number[],
    registry: Registry,
  ) {
    this.counts = new Float64Array(upperBounds.length);
    // The registry only calls get() and reset() on what it holds.
    registry.registerMetric(this as unknown as Metric);
  }

  /** `events` observations of `seconds` each. */
  observeMany(seconds: number, events: number): void {
    if (!Number.isFinite(seconds) || events <= 0) return;
    const bound = this.upperBounds.findIndex((upper) => seconds <= upper);
    if (bound >= 0) this.counts[bound]! += events;
    this.sum += seconds * events;
    this.count += events;
  }

  async get(): Promise<{
    name: string;
    help: string;
    type: 'histogram';
    aggregator: 'sum';
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  }> {
    const bucket = `${this.name}_bucket`;
    let cumulative = 0;
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] =
      this.upperBounds.map((upper, i) => {
        cumulative += this.counts[i]!;
        return { labels: { le: upper }, value: cumulative, metricName: bucket };
      });
    values.push(
      { labels: { le: '+Inf' }, value: this.count, metricName: bucket },
      { labels: {}, value: this.sum, metricName: `${this.name}_sum` },
      { labels: {}, value: this.count, metricName: `${this.name}_count` },
    );
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}
