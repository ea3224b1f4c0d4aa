"""``serving``: the HTTP service, its limits, replicas and batching."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raymlops.config.base import StrictModel


class BatchingConfig(StrictModel):
    enabled: bool = Field(True, description="Group concurrent requests into one model call (Serve dynamic batching).")
    max_batch_size: int = Field(
        16, ge=1, le=4096, description="Most requests per model call (at most serving.max_ongoing_requests).")
    wait_timeout_s: float = Field(0.005, ge=0, le=1, description="Longest a request waits for a batch to fill.")


class ServingConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Bind address; keep loopback unless you mean it.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    app_name: str | None = Field(None, description="Serve application name (default: the registered model name).")
    route_prefix: str = Field("/", pattern=r"^/", description="URL prefix of the API.")
    min_replicas: int = Field(1, ge=1, description="Fewest replicas.")
    max_replicas: int = Field(2, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(4, gt=0, description="Autoscaling target of in-flight requests per replica.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Most requests a replica works on at once (batching needs several in flight: 64 served 2.4x the requests/s of 16 at 32 clients, benchmarks/serve_knobs_bench.py).")
    max_queued_requests: int = Field(
        64, ge=1, description="Most requests waiting per proxy; beyond it requests are shed at once (finite queue).")
    admission: Literal["slo", "off"] = Field(
        "slo", description="'slo': each replica also limits the requests inside it to what keeps their latency "
        "within monitoring.latency_slo_ms, learned from the latency itself (raymlops/serving/admission.py), and "
        "sheds the rest at once; 'off': only the counts above.")
    shed_status: Literal[503, 429] = Field(503, description="HTTP status of a shed request.")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After header sent with a shed request.")
    request_timeout_s: float = Field(
        10.0, gt=0, description="A request not answered within this gets 408 (504 when the model call is what hung).")
    cpus_per_replica: float = Field(0.5, gt=0, description="CPUs reserved per replica.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Dynamic batching.")
    max_records_per_request: int = Field(1000, ge=1, le=100_000, description="Most records in one predict call.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Larger request bodies get 413.")
    api_key_env: str = Field(
        "RAYMLOPS_API_KEY", description="Environment variable holding the API key (never the key itself here).")
    api_key_file: str | None = Field(None, description="File holding the API key (read when the env var is unset).")
    require_key_for_predict: bool = Field(False, description="Also require the API key on /v1/predict.")
    canary_share: float = Field(
        0.0, ge=0, le=1, description="Share of requests answered by the `challenger` alias, when one exists.")
    watch_interval_s: float = Field(
        2.0, gt=0, le=300, description="How often replicas check the registry aliases and switch versions.")
    access_log: bool = Field(False, description="Log every request (Serve access log); costs throughput.")
