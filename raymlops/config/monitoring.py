"""``monitoring``: drift windows, live quality, sampling, retention."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raymlops.config.base import StrictModel


class DriftConfig(StrictModel):
    alpha: float = Field(0.01, gt=0, lt=1, description="False-alarm level of a window across all features.")
    correction: Literal["holm", "bonferroni", "bh", "none"] = Field(
        "holm", description="Multiple-testing correction across features.")
    min_psi: float = Field(0.1, ge=0, description="A feature drifts only if its PSI is at least this as well.")


class RetentionConfig(StrictModel):
    """How long raw request records (inputs that may be personal data) are kept on disk."""

    days: float | None = Field(90, gt=0, description="Drop feedback and journal lines older than this "
                               "(null: no age limit).")
    max_bytes: int | None = Field(512 * 1024 * 1024, ge=4096, description="Most bytes each log keeps, newest "
                                  "lines first (null: no size limit).")
    check_every_s: float = Field(60, gt=0, description="How often the monitor checks the logs against the limits.")


class MonitoringConfig(StrictModel):
    enabled: bool = Field(True, description="Run the monitoring actor.")
    sample_rate: float = Field(1.0, ge=0, le=1, description="Share of requests handed to the monitor.")
    window_rows: int = Field(2000, ge=50, description="Rows per drift window.")
    min_window_rows: int = Field(500, ge=10, description="Fewest rows before a window is judged.")
    quality_window: int = Field(1000, ge=10, description="Labelled predictions per live-quality window.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Drift tests.")
    latency_slo_ms: float = Field(
        50.0, gt=0, description="p99 in-replica latency the service is sized to meet: serving.admission sheds "
        "what would break it; exported as raymlops_latency_slo_seconds, which the RaymlopsLatencyHigh alert "
        "compares the live p99 with.")
    metrics_host: str = Field("127.0.0.1", description="Bind address of the monitor's Prometheus endpoint.")
    metrics_port: int = Field(9108, ge=1, le=65535, description="Port of the monitor's Prometheus endpoint.")
    keep_predictions: int = Field(
        20_000, ge=100, description="Sampled requests kept for joining late labels (the oldest fall out first).")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="Limits on the feedback log "
                                       "and the prediction journal, which hold raw request records.")
