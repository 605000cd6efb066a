"""Prometheus metrics, one registry per platform instance (so tests and two instances never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Counters and histograms the API, the execution core and the workers report into."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "propdesk_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram("propdesk_http_request_seconds", "HTTP request latency", ["route"], registry=r)
        self.order_seconds = Histogram(
            "propdesk_order_latency_seconds",
            "Order command latency (gates to commit)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.rejections = Counter("propdesk_gate_rejections_total", "Orders refused by a gate", ["reason"], registry=r)
        self.mtm_cycle_seconds = Histogram("propdesk_mtm_cycle_seconds", "Mark-to-market cycle time", registry=r)
        self.mtm_failures = Counter("propdesk_mtm_failures_total", "Accounts whose mark-to-market failed", registry=r)
        self.mtm_accounts = Gauge("propdesk_mtm_accounts", "Accounts marked in the last cycle", registry=r)
        self.quotes = Counter("propdesk_quotes_total", "Quotes received", ["outcome"], registry=r)
        # Arithmetic that failed inside a command (decimal InvalidOperation / overflow, a numeric column's range):
        # answered 422 ``value_out_of_range``. Inputs are bounded at the edge, so any count here is a missing bound.
        self.value_out_of_range = Counter(
            "propdesk_value_out_of_range_total",
            "Commands refused 422 value_out_of_range (arithmetic failed inside the command)",
            ["route"],
            registry=r,
        )
        # The live risk engine (engine/live.py): from a price's receipt to its candidates, and to their commit.
        fast = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
        self.risk_price_to_candidate = Histogram(
            "propdesk_risk_price_to_candidate_seconds",
            "Risk engine: price received to candidates handed to the execution core",
            buckets=fast,
            registry=r,
        )
        self.risk_price_to_committed = Histogram(
            "propdesk_risk_price_to_committed_seconds",
            "Risk engine: price received to the candidate's transaction committed",
            buckets=fast,
            registry=r,
        )
        self.risk_candidates = Counter(
            "propdesk_risk_candidates_total", "Risk engine candidates by outcome", ["outcome"], registry=r
        )
        self.value_out_of_range.labels(route="")  # present (at 0) from the start, so a scrape can assert it

    # The execution core's Metrics protocol.
    def rejection(self, code: str) -> None:
        self.rejections.labels(reason=code).inc()

    def order_latency(self, seconds: float) -> None:
        self.order_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
