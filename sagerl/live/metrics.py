"""A hand-written Prometheus text exposition: histograms, counters and gauges with labels.

The router's own metrics are few and updated on the request path, so each update is an index
and an add (no locks: only the event loop writes). ``render`` writes exposition format 0.0.4,
which ``sagerl.live.scrape.parse_prometheus`` (and Prometheus) read back.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)  # fmt: skip
"""Upper bounds of the request-time histograms, s."""

FAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
"""Upper bounds of the router-overhead and predictor histograms, s."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels_text(names: Sequence[str], values: Sequence[object]) -> str:
    """``{a="x",b="y"}`` (empty string without labels)."""
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v != v:
        return "NaN"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Histogram:
    """A labelled histogram with fixed buckets.

    Args:
        name: Metric name (``_bucket``, ``_sum``, ``_count`` are appended).
        help: One-line description.
        buckets: Increasing upper bounds (``+Inf`` is implied).
        labels: Label names.
    """

    def __init__(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        self.name, self.help = name, help
        self.bounds = list(buckets)
        self.labels = tuple(labels)
        self._series: dict[tuple[object, ...], list[float]] = {}

    def observe(self, value: float, *label_values: object) -> None:
        """Add one observation (a few hundred ns)."""
        s = self._series.get(label_values)
        if s is None:
            s = self._series[label_values] = [0.0] * (len(self.bounds) + 3)
        s[bisect.bisect_left(self.bounds, value)] += 1
        s[-2] += value
        s[-1] += 1

    def count(self, *label_values: object) -> int:
        s = self._series.get(label_values)
        return int(s[-1]) if s else 0

    def quantile(self, q: float, *label_values: object) -> float:
        """Upper bucket bound at quantile ``q`` (a coarse estimate for logs and tests)."""
        s = self._series.get(label_values)
        if not s or not s[-1]:
            return math.nan
        target = q * s[-1]
        acc = 0.0
        for i, bound in enumerate([*self.bounds, math.inf]):
            acc += s[i]
            if acc >= target:
                return bound
        return math.inf

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for key, s in sorted(self._series.items(), key=lambda kv: str(kv[0])):
            acc = 0.0
            for i, bound in enumerate([*self.bounds, math.inf]):
                acc += s[i]
                lab = labels_text((*self.labels, "le"), (*key, _num(bound)))
                yield f"{self.name}_bucket{lab} {_num(acc)}"
            base = labels_text(self.labels, key)
            yield f"{self.name}_sum{base} {_num(s[-2])}"
            yield f"{self.name}_count{base} {_num(s[-1])}"


class Counter:
    """A labelled monotonically increasing count."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help = name, help
        self.labels = tuple(labels)
        self.values: dict[tuple[object, ...], float] = {}

    def inc(self, *label_values: object, by: float = 1.0) -> None:
        self.values[label_values] = self.values.get(label_values, 0.0) + by

    def get(self, *label_values: object) -> float:
        return self.values.get(label_values, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for key, v in sorted(self.values.items(), key=lambda kv: str(kv[0])):
            yield f"{self.name}{labels_text(self.labels, key)} {_num(v)}"


class Gauge(Counter):
    """A labelled value set at render time (callers ``set`` it just before rendering)."""

    kind = "gauge"

    def set(self, value: float, *label_values: object) -> None:
        self.values[label_values] = value


def render(metrics: Iterable[Histogram | Counter]) -> str:
    """The exposition text of ``metrics``, newline-terminated."""
    lines: list[str] = []
    for m in metrics:
        lines.extend(m.render())
    return "\n".join(lines) + "\n"
