"""``GET /metrics``: Prometheus text from a registry of this server's own (never the global
default one, so two servers in one process, or tests, do not mix).

Counted as requests end (never per token): requests by endpoint, model and status, prompt and
completion tokens, time to first token and tokens/s histograms per model. Read at scrape time
from the runtime and the download service: slots, running and queued requests per model
(queue depth), loaded models and their memory estimate, downloads running and the bytes
downloaded since the server started. ``model`` labels are only ids of installed models.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tui.download.progress import DownloadEvent
from tui.serve.stats import ServeStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TPS_BUCKETS = (1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000)


class ServeMetrics:
    """The server's metrics; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, services: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("modeldeck_requests", "Requests answered, by endpoint, model "
                                "and HTTP status", ["endpoint", "model", "status"], registry=r)
        self.prompt_tokens = Counter("modeldeck_prompt_tokens", "Prompt tokens processed",
                                     ["model"], registry=r)
        self.completion_tokens = Counter("modeldeck_completion_tokens", "Tokens generated",
                                         ["model"], registry=r)
        self.ttft = Histogram("modeldeck_time_to_first_token_seconds", "From the request's "
                              "arrival to its first token (queue and load included)",
                              ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.tps = Histogram("modeldeck_tokens_per_second", "Generation speed of an answer "
                             "after its first token", ["model"], buckets=TPS_BUCKETS,
                             registry=r)
        self.download_done: dict[str, int] = {}
        self.download_bytes = 0
        self.stats = ServeStats(services)  # the same numbers in plain Python (the dashboard)
        r.register(_Live(services, self))

    def on_download(self, event: DownloadEvent) -> None:
        """Count downloaded bytes (a download event subscriber)."""
        last = self.download_done.get(event.job_id)
        if last is not None and event.done_bytes > last:
            self.download_bytes += event.done_bytes - last
        self.download_done[event.job_id] = event.done_bytes
        if event.state in ("done", "failed", "cancelled", "paused"):
            self.download_done.pop(event.job_id, None)

    def answered(self, endpoint: str, model: str, status: int, *, prompt: int = 0,
                 completion: int = 0, ttft_s: float | None = None,
                 tokens_per_s: float | None = None) -> None:
        """One request done."""
        self.stats.answered(model, status, completion)
        self.requests.labels(endpoint, model, str(status)).inc()
        if prompt:
            self.prompt_tokens.labels(model).inc(prompt)
        if completion:
            self.completion_tokens.labels(model).inc(completion)
        if ttft_s is not None:
            self.ttft.labels(model).observe(ttft_s)
        if tokens_per_s is not None:
            self.tps.labels(model).observe(tokens_per_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Live:
    """What is true now, read at scrape time."""

    def __init__(self, services: Any, metrics: ServeMetrics) -> None:
        self.services = services
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        runtime = self.services.runtime
        loaded = runtime.loaded()
        yield GaugeMetricFamily("modeldeck_loaded_models", "Models loaded", value=len(loaded))
        memory = GaugeMetricFamily("modeldeck_model_memory_bytes", "Estimated memory of a "
                                   "loaded model", labels=["model"])
        slots = GaugeMetricFamily("modeldeck_model_slots", "Answers a loaded model decodes "
                                  "at once", labels=["model"])
        running = GaugeMetricFamily("modeldeck_requests_running", "Requests being answered",
                                    labels=["model"])
        queued = GaugeMetricFamily("modeldeck_queue_depth", "Requests waiting for a slot",
                                   labels=["model"])
        for m in loaded:
            memory.add_metric([m.id], m.memory_bytes)
            slots.add_metric([m.id], m.slots)
            running.add_metric([m.id], m.running)
            queued.add_metric([m.id], m.queued)
        yield from (memory, slots, running, queued)
        active = 0
        downloads = self.services.__dict__.get("downloads")
        if downloads is not None:
            active = sum(1 for j in downloads.list_jobs() if downloads.runs_here(j.id))
        yield GaugeMetricFamily("modeldeck_downloads_running", "Downloads this server runs",
                                value=active)
        yield CounterMetricFamily("modeldeck_download_bytes", "Bytes downloaded since the "
                                  "server started", value=self.metrics.download_bytes)
