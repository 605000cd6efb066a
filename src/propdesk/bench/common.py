"""What every ``propdesk bench`` scenario shares: percentiles, medians over trials, the machine, the result line.

The contract (docs: PERFORMANCE.md): a scenario measures our path and the bare physical limit of the same
work in the same run, interleaved (path, limit, path, limit, ...) over k trials; ``ratio_to_limit`` is the median
cost per unit of work of the path over the median cost of the limit; ``correct`` is a check of the output
against a slow reference on a sample. The result is one JSON object (the last stdout line with ``--json``).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

ProgressFn = Callable[[str, float], None]
"""``progress(description, advance)``: the CLI passes one backed by a rich progress bar on stderr."""


def no_progress(description: str, advance: float) -> None:
    pass


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (``pct`` in 0..100)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(pct / 100.0 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p99/max in microseconds from per-call samples in nanoseconds."""
    s = sorted(samples_ns)
    return {
        "latency_us_p50": round(percentile(s, 50) / 1000, 3),
        "latency_us_p99": round(percentile(s, 99) / 1000, 3),
        "latency_us_max": round((s[-1] if s else 0) / 1000, 3),
    }


def median_of(trials: Sequence[dict[str, float]], key: str) -> float:
    return round(float(statistics.median(t[key] for t in trials)), 3)


@dataclass
class BenchResult:
    """The contract's result object."""

    scenario: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    limit: dict[str, Any]
    ratio_to_limit: float
    correct: bool
    machine: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why ``correct`` is false (stderr only)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "params": self.params,
            "metrics": self.metrics,
            "limit": self.limit,
            "ratio_to_limit": self.ratio_to_limit,
            "correct": self.correct,
            "machine": self.machine,
        }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(**extra: Any) -> dict[str, Any]:
    """Where the figures were measured (absolute times mean little without it)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "loadavg": load,
        **extra,
    }
