"""The model service on real Ray Serve, real MLflow and real HTTP on 127.0.0.1.

One smoke model is trained and served for the module; tests that move aliases put them back.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from raymlops.serving.client import Client
from raymlops.config import load_config
from raymlops.data.stage import run_data_stage
from raymlops.errors import ServingError
from raymlops.model.batch import predict_dataset
from raymlops.monitoring.monitor import stop_monitor
from raymlops.registry.store import CHALLENGER, CHAMPION, Registry
from raymlops.model.inputs import probe_record
from raymlops.training.stage import run_training_stage
from tests.helpers import free_port, serve_port, smoke_dict, wait_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # a request rate and shedding latency
KEY = "test-key-5f1c9a"


def register_copy(reg: Registry, name: str, package_dir: Path, tmp: Path, mutate=None) -> str:
    """Register the same package again as a new version (optionally damaged by ``mutate``)."""
    copy = tmp / f"copy-{time.time_ns()}"
    shutil.copytree(package_dir, copy)
    if mutate:
        mutate(copy)
    run_id = reg.start_run(name, "copy")
    reg.log_artifacts(run_id, copy, "model")
    reg.end_run(run_id)
    return reg.register(name, run_id, "model", tags={"test": "copy"})


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory):
    from ray import serve

    from raymlops.serving.deploy import deploy

    tmp = tmp_path_factory.mktemp("serving")
    (tmp / "api.key").write_text(KEY + "\n")
    data = smoke_dict()
    data["training"]["epochs"] = 2
    data["serving"] = {"port": serve_port(), "api_key_file": str(tmp / "api.key"), "min_replicas": 2,
                       "max_replicas": 2, "cpus_per_replica": 0.25, "watch_interval_s": 0.5}
    data["monitoring"] = {"window_rows": 200, "min_window_rows": 100, "metrics_port": free_port()}
    cfg = load_config(write_config(tmp, data))
    stage = run_data_stage(cfg)
    trained = run_training_stage(cfg, stage, run_name="serve-v1")
    assert trained.version == "1" and CHAMPION in trained.aliases
    # Offline predictions first: the replicas will hold CPUs that Ray Data's read tasks need on 2 cores.
    offline = predict_dataset(stage.raw["test"], trained.package_dir).to_pandas()
    url = deploy(cfg)
    yield {"cfg": cfg, "url": url, "offline": offline, "trained": trained, "tmp": tmp,
           "registry": Registry.for_config(cfg), "name": cfg.model_name}
    serve.shutdown()
    assert stop_monitor(cfg.model_name, cfg.workdir_path)


def _records(frame: pd.DataFrame, schema: dict) -> list[dict]:
    rows = json.loads(frame[list(schema)].to_json(orient="records", date_format="iso"))
    return rows


def test_http_predictions_equal_offline_batch_predictions(service):
    schema = Client(service["url"]).model_info()["input_schema"]
    offline = service["offline"]
    assert len(offline) >= 300
    rows = _records(offline, schema)
    with Client(service["url"]) as client:
        got = []
        for i in range(0, len(rows), 250):
            answer = client.predict(rows[i:i + 250])
            assert answer["version"] == "1" and answer["alias"] == CHAMPION
            got += [p["score"] for p in answer["predictions"]]
        single = client.predict(rows[7])["predictions"][0]["score"]
    np.testing.assert_allclose(got, offline["score"].to_numpy(), rtol=0, atol=1e-6)
    assert abs(single - offline["score"].iloc[7]) < 1e-6
    assert len({round(p, 6) for p in got}) > len(got) // 10  # answers differ by row: not one constant score



def test_serves_controller_waits_longer_for_a_proxy_that_is_slow_to_start(service):
    """Serve's controller kills a proxy not ready within 5 s; on a busy 2-core machine starting its process
    took longer and ``serve.start`` failed with ActorDiedError. ``deploy`` gives the controller 30 s."""
    import ray

    from raymlops.runtime.reaper import node_processes
    from raymlops.serving.deploy import PROXY_READY_ENV

    ours = node_processes(ray._private.worker._global_node.get_session_dir_path())
    controller = [pid for pid in ours
                  if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ServeController")]
    assert len(controller) == 1, ours
    environ = Path(f"/proc/{controller[0]}/environ").read_bytes().split(b"\0")
    assert f"{PROXY_READY_ENV}=30".encode() in environ


BAD_BODIES = {
    "wrong type": lambda r: {"record": {**r, "distance": "far"}},
    "missing field": lambda r: {"record": {k: v for k, v in r.items() if k != "carrier"}},
    "unknown field": lambda r: {"record": {**r, "tail_number": "N123"}},
    "NaN": lambda r: {"record": {**r, "distance": float("nan")}},
    "infinity": lambda r: {"record": {**r, "temp": float("inf")}},
    "unknown category": lambda r: {"record": {**r, "origin": "XXX"}},
    "out of range": lambda r: {"record": {**r, "hour": 99}},
    "empty list": lambda r: {"records": []},
    "both forms": lambda r: {"record": r, "records": [r]},
    "too many records": lambda r: {"records": [r] * 1001},
    "list instead of object": lambda r: [r],
}


def test_malformed_requests_get_4xx_that_name_the_problem_and_service_keeps_serving(service):
    url = service["url"]
    schema = requests.get(f"{url}/v1/model", timeout=10).json()["input_schema"]
    good = probe_record(schema)
    for what, make in BAD_BODIES.items():
        resp = requests.post(f"{url}/v1/predict", data=json.dumps(make(good)), timeout=10,
                             headers={"content-type": "application/json"})
        assert 400 <= resp.status_code < 500, (what, resp.status_code, resp.text[:300])
        assert resp.json()["detail"], what
    field_named = requests.post(f"{url}/v1/predict", json={"record": {**good, "distance": "far"}}, timeout=10)
    assert field_named.json()["detail"][0]["loc"] == ["body", "record", "distance"]
    for raw, status in ((b"{not json", 422), (b"x" * 10_000_000, 413), (b"", 422)):
        resp = requests.post(f"{url}/v1/predict", data=raw, headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == status, (raw[:20], resp.status_code, resp.text[:200])
    spec = requests.get(f"{url}/openapi.json", timeout=10).json()
    record = spec["components"]["schemas"]["Record"]
    assert record["additionalProperties"] is False and set(record["required"]) >= {"carrier", "distance"}
    assert record["properties"]["origin"]["enum"] == ["EWR", "JFK", "LGA"]
    with Client(url) as client:
        with pytest.raises(ServingError, match="record.origin"):
            client.predict({**good, "origin": "XXX"})
        assert client.predict(good)["predictions"][0]["score"] >= 0
        assert client.ready()["status"] == "ready"


def test_state_changing_routes_refuse_missing_and_wrong_keys(service):
    url = service["url"]
    body = {"items": [{"request_id": "0" * 32, "index": 0, "label": 1}]}
    assert requests.post(f"{url}/v1/feedback", json=body, timeout=10).status_code == 401
    wrong = requests.post(f"{url}/v1/feedback", json=body, timeout=10, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert requests.post(f"{url}/v1/admin/refresh", timeout=10, headers={"X-API-Key": "nope"}).status_code == 403
    assert requests.post(f"{url}/v1/admin/refresh", timeout=10).status_code == 401
    ok = requests.post(f"{url}/v1/feedback", json=body, timeout=10, headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and ok.json() == {"accepted": 0, "unknown": ["0" * 32]}


def test_feedback_is_joined_to_the_prediction_by_request_id(service):
    schema = Client(service["url"]).model_info()["input_schema"]
    record = probe_record(schema)
    with Client(service["url"], api_key=KEY) as client:
        answer = client.predict([record, record])
        result = client.feedback([(answer["request_id"], 1, 1.0), (answer["request_id"], 5, 0.0)])
    assert result == {"accepted": 1, "unknown": [f"{answer['request_id']}[5]"]}
    lines = (service["cfg"].workdir_path / "monitoring" / service["name"] / "feedback.jsonl").read_text().splitlines()
    joined = [json.loads(line) for line in lines if answer["request_id"] in line]
    assert joined[0]["index"] == 1 and joined[0]["label"] == 1.0 and joined[0]["version"] == answer["version"]
    assert abs(joined[0]["score"] - answer["predictions"][1]["score"]) < 1e-12


def test_a_label_the_model_cannot_have_gets_422_naming_the_item_and_quality_keeps_working(service):
    """A label 7 on a binary model used to be stored, and every later live-quality figure raised (500)."""
    schema = Client(service["url"]).model_info()["input_schema"]
    record = probe_record(schema)
    with Client(service["url"], api_key=KEY) as client:
        answer = client.predict([record, record])
    rid = answer["request_id"]
    bad = requests.post(f"{service['url']}/v1/feedback", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                        json={"items": [{"request_id": rid, "index": 0, "label": 1.0},
                                        {"request_id": rid, "index": 1, "label": 7.0}]})
    assert bad.status_code == 422, bad.text
    (detail,) = bad.json()["detail"]
    assert detail["loc"] == ["body", "items", 1, "label"] and "items[1].label: 7 is not a class" in detail["msg"]
    log = service["cfg"].workdir_path / "monitoring" / service["name"] / "feedback.jsonl"
    assert rid not in (log.read_text() if log.exists() else "")  # nothing of the refused body was recorded
    with Client(service["url"], api_key=KEY) as client:
        assert client.feedback([(rid, 0, 1.0), (rid, 1, 0.0)]) == {"accepted": 2, "unknown": []}


class SteadyLoad:
    """About ``rate`` requests/s from ``threads`` paced threads; records every answer's version and failure."""

    def __init__(self, url: str, record: dict, rate: float = 50.0, threads: int = 4) -> None:
        self.url, self.record, self.interval = url, record, threads / rate
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.seconds = 0.0

    def _run(self) -> None:
        session = requests.Session()
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                resp = session.post(f"{self.url}/v1/predict", json={"record": self.record}, timeout=10)
                if resp.status_code == 200:
                    self.versions.append(resp.json()["version"])
                else:
                    self.failures.append(f"{resp.status_code}: {resp.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    @property
    def rate(self) -> float:
        return len(self.versions) / self.seconds if self.seconds else 0.0

    def wait_for_answers(self, n: int, what: str, version: str | None = None) -> None:
        """Wait until ``n`` more answers (from ``version``, when given) have come back than now."""
        def count() -> int:
            return sum(v == version for v in self.versions) if version else len(self.versions)

        target = count() + n
        wait_for(lambda: count() >= target, timeout_s=60, what=f"{n} answers: {what}", every_s=0.05)

    def __enter__(self) -> SteadyLoad:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.seconds = time.monotonic() - self._started


def _served_versions(url: str, n: int = 12) -> set[str]:
    return {requests.post(f"{url}/v1/predict", json={"record": probe_record(
        requests.get(f"{url}/v1/model", timeout=10).json()["input_schema"])}, timeout=10).json()["version"]
        for _ in range(n)}


def test_promotion_and_rollback_under_load_fail_no_request(service):
    reg, name, url = service["registry"], service["name"], service["url"]
    v2 = register_copy(reg, name, service["trained"].package_dir, service["tmp"])
    schema = Client(url).model_info()["input_schema"]
    with SteadyLoad(url, probe_record(schema), rate=50) as load:
        load.wait_for_answers(60, "v1 under load before the promotion")
        reg.promote(name, v2, reason="test promotion")
        wait_for(lambda: _served_versions(url) == {v2}, what=f"every replica serving v{v2}")
        load.wait_for_answers(100, f"v{v2} under load after the promotion", version=v2)
        reg.rollback(name, reason="test rollback")
        wait_for(lambda: _served_versions(url) == {"1"}, what="every replica back on v1")
        load.wait_for_answers(60, "v1 under load after the rollback", version="1")
    print(f"\nsteady load: {len(load.versions)} answers in {load.seconds:.1f} s ({load.rate:.0f}/s), "
          f"{len(load.failures)} failures, versions seen {sorted(set(load.versions))}")
    assert load.failures == []
    assert load.rate > 15 and len(load.versions) > 200
    first_v2 = load.versions.index(v2)
    assert set(load.versions[:first_v2]) == {"1"} and load.versions[-1] == "1"
    assert reg.version_for_alias(name, CHAMPION) == "1"


def test_tampered_version_is_refused_and_the_current_one_keeps_serving(service):
    reg, name, url = service["registry"], service["name"], service["url"]

    def tamper(path: Path) -> None:
        weights = path / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64])  # truncated after its checksum was recorded

    bad = register_copy(reg, name, service["trained"].package_dir, service["tmp"], mutate=tamper)
    reg.promote(name, bad, reason="test: tampered")
    try:
        info = wait_for(lambda: (lambda i: i if CHAMPION in i["errors"] else None)(
            requests.get(f"{url}/v1/model", timeout=10).json()), what="the refusal to show in /v1/model")
        assert "checksum" in info["errors"][CHAMPION] and info[CHAMPION]["version"] == "1"
        assert _served_versions(url) == {"1"}
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    finally:
        reg.rollback(name, reason="test: undo tampered")
    assert reg.version_for_alias(name, CHAMPION) == "1"


def test_canary_sends_its_share_to_the_challenger_and_says_which_answered(service):
    from ray import serve

    from raymlops.serving.app import build_app
    from raymlops.serving.settings import settings_for

    reg, name, url, cfg = service["registry"], service["name"], service["url"], service["cfg"]
    challenger = register_copy(reg, name, service["trained"].package_dir, service["tmp"])
    reg.move_alias(name, CHALLENGER, challenger, action="canary", reason="test canary")
    settings = settings_for(cfg, canary_share=0.3)
    serve.run(build_app(settings), name=cfg.model_name, route_prefix="/", blocking=False)  # user_config only
    try:
        wait_for(lambda: requests.get(f"{url}/v1/model", timeout=10).json()["canary_share"] == 0.3
                  and requests.get(f"{url}/v1/model", timeout=10).json()[CHALLENGER], what="canary settings")
        record = probe_record(settings.input_schema)
        answers = [requests.post(f"{url}/v1/predict", json={"record": record}, timeout=10).json()
                   for _ in range(300)]
        by_alias = {a: {x["version"] for x in answers if x["alias"] == a} for a in (CHAMPION, CHALLENGER)}
        share = sum(x["alias"] == CHALLENGER for x in answers) / len(answers)
        print(f"\ncanary share answered by the challenger: {share:.2f} (configured 0.30)")
        assert by_alias == {CHAMPION: {"1"}, CHALLENGER: {challenger}}
        assert 0.2 <= share <= 0.4
    finally:
        reg.move_alias(name, CHALLENGER, None, action="canary-end", reason="test canary over")
        serve.run(build_app(settings_for(cfg)), name=cfg.model_name, route_prefix="/", blocking=False)
    wait_for(lambda: requests.get(f"{url}/v1/model", timeout=10).json()[CHALLENGER] is None,
              what="the challenger to leave")


def test_overload_is_shed_at_once_with_retry_after_and_service_recovers(service):
    """One slot in the replica, one in the queue: of 16 simultaneous requests most are shed immediately."""
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve

    from raymlops.config import BatchingConfig
    from raymlops.serving.deploy import deploy

    slow = BatchingConfig(enabled=True, max_batch_size=8, wait_timeout_s=1.0)  # a lone request waits 1 s
    url = deploy(service["cfg"], app_name="shed", route_prefix="/shed", min_replicas=1, max_replicas=1,
                 max_ongoing_requests=1, max_queued_requests=1, retry_after_s=2, batching=slow)
    try:
        record = probe_record(Client(url).model_info()["input_schema"])

        def call(_):
            started = time.monotonic()
            resp = requests.post(f"{url}/v1/predict", json={"record": record}, timeout=30)
            return resp.status_code, resp.headers.get("Retry-After"), time.monotonic() - started

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(16)))
        shed = [r for r in results if r[0] == 503]
        served = [r for r in results if r[0] == 200]
        print(f"\n16 at once: {len(served)} served, {len(shed)} shed; slowest shed answer "
              f"{max(r[2] for r in shed):.2f} s")
        assert len(served) + len(shed) == 16 and len(shed) >= 10 and served
        assert all(r[1] == "2" for r in shed) and max(r[2] for r in shed) < 1.0
        with Client(url, retries=0) as client:
            assert client.predict(record)["version"] == "1"  # the queue drained: serving again
    finally:
        serve.delete("shed")


def _metric(port: int, name: str, **labels: str) -> float | None:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except requests.ConnectionError:  # the monitor is (re)starting
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_monitor_exports_drift_of_live_traffic_to_prometheus(service):
    port, name = service["cfg"].monitoring.metrics_port, service["name"]
    schema = Client(service["url"]).model_info()["input_schema"]
    real = _records(service["offline"], schema)[:240]
    with Client(service["url"]) as client:
        for i in range(0, 240, 60):
            client.predict(real[i:i + 60])
        wait_for(lambda: _metric(port, "raymlops_feature_psi", feature="distance", model=name) is not None,
                  what="drift metrics after a window of real traffic")
        time.sleep(0.5)
        assert _metric(port, "raymlops_feature_drifted", feature="distance", model=name) == 0.0
        far = [{**r, "distance": min(4999.0, r["distance"] * 3 + 1500)} for r in real]
        for i in range(0, 240, 60):
            client.predict(far[i:i + 60])
    wait_for(lambda: _metric(port, "raymlops_feature_drifted", feature="distance", model=name) == 1.0,
              what="distance to be flagged as drifted")
    assert _metric(port, "raymlops_feature_drifted", feature="carrier", model=name) == 0.0
    assert _metric(port, "raymlops_requests_total", model=name, version="1", alias=CHAMPION) > 0


def test_killing_the_monitor_fails_no_request_and_it_comes_back(service):
    import ray

    from raymlops.monitoring.monitor import NAMESPACE, monitor_name

    schema = Client(service["url"]).model_info()["input_schema"]
    monitor = ray.get_actor(monitor_name(service["name"], service["cfg"].workdir_path), namespace=NAMESPACE)
    def samples() -> int:
        return sum(ray.get(monitor.stats.remote(), timeout=10)["requests"].values())

    held = samples()
    killed_pid = ray.get(monitor.stats.remote(), timeout=10)["pid"]
    with Client(service["url"]) as client:
        before = client.predict(probe_record(schema))
    # Its sample is handed over (every 0.25 s) before the kill: its label must join after the restart.
    wait_for(lambda: samples() > held, what="the monitor to hold the request's sample before the kill")
    with SteadyLoad(service["url"], probe_record(schema), rate=40) as load:
        load.wait_for_answers(60, "before the monitor is killed")
        ray.kill(monitor, no_restart=False)
        killed_at = time.monotonic()

        def fed_again():
            try:
                actor = ray.get_actor(monitor_name(service["name"], service["cfg"].workdir_path), namespace=NAMESPACE)
                stats = ray.get(actor.stats.remote(), timeout=10)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ValueError):
                return None  # still restarting
            # ray.kill returns before the actor dies: the killed monitor may still answer for a moment
            return stats if stats["pid"] != killed_pid and sum(stats["requests"].values()) > 0 else None

        stats = wait_for(fed_again, timeout_s=60, what="the restarted monitor to receive samples")
        back_after = time.monotonic() - killed_at
        load.wait_for_answers(80, "after the monitor is back")  # the load goes on past the restart
    print(f"\nmonitor killed under load: {len(load.versions)} answers, {len(load.failures)} failures; "
          f"fed again after {back_after:.1f} s; samples counted lost: {stats['gap']}")
    assert load.failures == [] and len(load.versions) > 100
    assert stats["gap"] > 0  # hand-overs during the restart failed, and the replicas said so
    # The new monitor exports again and judges drift against the same reference as before.
    assert stats["metrics_endpoint"] == f"http://127.0.0.1:{service['cfg'].monitoring.metrics_port}/metrics"
    assert "1" in stats["references"]
    # Answers given before the restart are in the journal: their labels still join.
    with Client(service["url"], api_key=KEY) as client:
        assert client.feedback([(before["request_id"], 0, 1.0)]) == {"accepted": 1, "unknown": []}


def test_a_real_prometheus_scrapes_drift_from_the_monitor(service, tmp_path):
    from tests.integration.prometheus import prometheus_scraping

    port, name = service["cfg"].monitoring.metrics_port, service["name"]
    schema = Client(service["url"]).model_info()["input_schema"]
    with Client(service["url"]) as client:
        for chunk in range(4):
            client.predict(_records(service["offline"], schema)[chunk * 60:(chunk + 1) * 60])
    wait_for(lambda: _metric(port, "raymlops_feature_psi", feature="distance", model=name) is not None,
              what="the monitor to publish drift")
    with prometheus_scraping([f"127.0.0.1:{port}"], tmp_path / "prometheus") as prom:
        def query():
            body = requests.get(f"{prom}/api/v1/query", timeout=5,
                                params={"query": f'raymlops_feature_psi{{model="{name}",feature="distance"}}'}).json()
            return body["data"]["result"] if body["status"] == "success" else None
        (series,) = wait_for(query, timeout_s=30, what="Prometheus to have scraped the drift metric")
    assert series["metric"]["job"] == "raymlops" and float(series["value"][1]) >= 0.0
