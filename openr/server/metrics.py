"""Prometheus metrics, named and labelled the way vLLM's are (`vllm:` becomes `openr:`).

Each app owns its registry, so several servers in one process (tests) do not
collide and `/metrics` shows exactly this server.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


class ServerMetrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        reg = self.registry
        self.running = Gauge("openr:num_requests_running", "Requests being generated now.", labels, registry=reg)
        self.waiting = Gauge("openr:num_requests_waiting", "Requests queued for a free slot.", labels, registry=reg)
        self.engine_sequences = Gauge("openr:engine_sequences_running",
                                      "Samples the engine is generating now.", labels, registry=reg)
        self.e2e_latency = Histogram("openr:e2e_request_latency_seconds", "End-to-end request latency.",
                                     labels, buckets=LATENCY_BUCKETS_S, registry=reg)
        self.ttft = Histogram("openr:time_to_first_token_seconds", "Time to the first generated token.",
                              labels, buckets=TTFT_BUCKETS_S, registry=reg)
        self.prompt_tokens = Counter("openr:prompt_tokens", "Prompt tokens processed.", labels, registry=reg)
        self.generation_tokens = Counter("openr:generation_tokens", "Tokens generated.", labels, registry=reg)
        self.request_success = Counter("openr:request_success", "Requests finished, by finish reason.",
                                       labels + ["finished_reason"], registry=reg)
        self.model_name = model_name

    def bind(self, engine) -> None:
        self.engine_sequences.labels(self.model_name).set_function(lambda: engine.active_sequences)

    def render(self) -> bytes:
        return generate_latest(self.registry)
