"""Prometheus metrics of the OpenAI ingress, in a registry of its own (no global clashes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "r1p_requests",
            "Requests by model, endpoint and HTTP status",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "r1p_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "r1p_request_duration_seconds",
            "End-to-end request latency",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "r1p_requests_in_flight",
            "Requests accepted and not yet finished",
            ["model"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "r1p_tokens", "Tokens processed", ["model", "kind"], registry=self.registry
        )

    def observe_done(
        self,
        model: str,
        endpoint: str,
        status: int,
        usage: dict | None,
        ttft: float | None,
        e2e: float,
    ) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
        self.e2e.labels(model).observe(e2e)
        if usage:
            self.tokens.labels(model, "prompt").inc(usage.get("prompt_tokens", 0))
            self.tokens.labels(model, "completion").inc(usage.get("completion_tokens", 0))
            details = usage.get("completion_tokens_details") or {}
            self.tokens.labels(model, "reasoning").inc(details.get("reasoning_tokens", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
