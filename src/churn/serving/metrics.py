"""Prometheus metrics, summed over every worker of one `churn serve`."""

from __future__ import annotations

import logging
import os

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from churn.serving.loading import Bundle

log = logging.getLogger("churn.serve")


# --- metrics ---------------------------------------------------------------------------


SCORE_BOUNDS = tuple(i / 10 for i in range(1, 10))


def observe_batch(histogram: Histogram, scores: np.ndarray) -> None:
    """Add a whole batch to a histogram child in one numpy pass (a thousand `observe` calls
    cost as much as the model on a batch). Buckets hold per-bucket counts, `le` semantics."""
    counts = np.bincount(np.searchsorted(SCORE_BOUNDS, scores, side="left"),
                         minlength=len(SCORE_BOUNDS) + 1)  # fmt: skip
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(np.sum(scores)))


class Metrics:
    """The app's Prometheus metrics. Under `churn serve --workers N` (PROMETHEUS_MULTIPROC_DIR
    set before the workers import prometheus_client) every worker writes its values to
    shared files and /metrics sums them, whichever worker answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._info_labels: list[tuple[str, str, str]] = []
        r = self.registry
        self.requests = Counter("churn_http_requests", "HTTP requests", ["route", "status"],
                                registry=r)  # fmt: skip
        self.latency = Histogram(
            "churn_http_request_seconds", "Request latency", ["route"], registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.errors = Counter("churn_http_errors", "Responses with status >= 500, and exceptions",
                              ["route", "kind"], registry=r)  # fmt: skip
        self.scores = Histogram("churn_prediction_score", "Predicted churn probability",
                                ["role"], registry=r, buckets=SCORE_BOUNDS)  # fmt: skip
        self.predictions = Counter("churn_predictions", "Predictions by model",
                                   ["model_version", "role"], registry=r)  # fmt: skip
        self.model_info = Gauge("churn_model_info", "Loaded model (value 1), per worker",
                                ["role", "version", "sha256"], registry=r,
                                multiprocess_mode="liveall")  # fmt: skip
        self.reloads = Counter("churn_reloads", "Reload attempts", ["result"], registry=r)
        self.shadow_delta = Histogram(
            "churn_shadow_score_delta", "Challenger minus champion score (shadow)", registry=r,
            buckets=(-0.5, -0.2, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.2, 0.5),
        )  # fmt: skip
        self.shadow_agreement = Counter("churn_shadow_agreement", "Shadow decisions agreeing",
                                        ["agree"], registry=r)  # fmt: skip

    def loaded(self, bundle: Bundle) -> None:
        for labels in self._info_labels:  # 0, not removed: a shared file keeps what was set
            self.model_info.labels(*labels).set(0)
        served = [s for s in (bundle.champion, bundle.challenger) if s is not None]
        self._info_labels = [(s.role, s.version, s.entry["sha256"][:12]) for s in served]
        for labels in self._info_labels:
            self.model_info.labels(*labels).set(1)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
