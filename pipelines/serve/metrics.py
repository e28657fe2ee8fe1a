"""The numbers a serving team watches, as Ray metrics: Ray exports them on its Prometheus endpoint, where Ray's
dashboard and Grafana read them. Every metric is tagged with the served model's name and its Serve application.

- llava_sp_time_to_first_token_s, llava_sp_time_per_output_token_s, llava_sp_queue_time_s: histograms per request
  (queue time: submitted until its prefill started);
- llava_sp_completion_tokens: a counter (its rate is tokens/s);
- llava_sp_requests: a counter by outcome (stop, length, error, cancelled, overloaded, refused);
- llava_sp_running_requests, llava_sp_waiting_requests: gauges of the replica's batch and queue.

The replica's `stats()` returns the same numbers since it started, for tests and quick looks.
"""

from __future__ import annotations

from collections import Counter as Tally

from ray.util.metrics import Counter, Gauge, Histogram

from sp_core.engine import EngineRequest

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
TAG_KEYS = ("model", "application")


class ReplicaMetrics:
    """Records each finished request and the replica's load."""

    def __init__(self, model: str, application: str):
        self.tags = {"model": model, "application": application}
        self.time_to_first_token = Histogram("llava_sp_time_to_first_token_s", "submitted -> first token",
                                             LATENCY_BOUNDARIES_S, TAG_KEYS)
        self.time_per_output_token = Histogram("llava_sp_time_per_output_token_s", "decode time per token after "
                                               "the first", LATENCY_BOUNDARIES_S, TAG_KEYS)
        self.queue_time = Histogram("llava_sp_queue_time_s", "submitted -> prefill started", LATENCY_BOUNDARIES_S,
                                    TAG_KEYS)
        self.completion_tokens = Counter("llava_sp_completion_tokens", "tokens generated", TAG_KEYS)
        self.requests = Counter("llava_sp_requests", "requests by outcome", TAG_KEYS + ("outcome",))
        self.running = Gauge("llava_sp_running_requests", "requests in the running batch", TAG_KEYS)
        self.waiting = Gauge("llava_sp_waiting_requests", "requests waiting to join the batch", TAG_KEYS)
        self.outcomes: Tally[str] = Tally()
        self.latest: dict[str, float] = {}

    def finished(self, request: EngineRequest, outcome: str, completion_tokens: int) -> None:
        """A request left: its outcome, and its latencies where it got that far."""
        self.outcome(outcome)
        self.completion_tokens.inc(completion_tokens, self.tags)
        if request.admitted_at is not None:
            self._observe(self.queue_time, "queue_time_s", request.admitted_at - request.submitted_at)
        if request.first_token_at is not None:
            self._observe(self.time_to_first_token, "time_to_first_token_s",
                          request.first_token_at - request.submitted_at)
            if request.finished_at is not None and completion_tokens > 1:
                self._observe(self.time_per_output_token, "time_per_output_token_s",
                              (request.finished_at - request.first_token_at) / (completion_tokens - 1))

    def outcome(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.requests.inc(1, {**self.tags, "outcome": outcome})

    def load(self, running: int, waiting: int) -> None:
        self.running.set(running, self.tags)
        self.waiting.set(waiting, self.tags)

    def _observe(self, histogram: Histogram, name: str, value: float) -> None:
        histogram.observe(value, self.tags)
        self.latest[name] = value

    def summary(self) -> dict[str, object]:
        return {"outcomes": dict(self.outcomes), "latest": dict(self.latest)}
