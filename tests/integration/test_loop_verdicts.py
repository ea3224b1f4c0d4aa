"""The loop's verdicts at the shipped defaults, on real Ray, MLflow and HTTP (issue 14's acceptance):

- on unchanged data (the champion's own test month, replayed twice in 20 steps) the loop takes no
  action: no retrain, no promotion, whatever the drift statistics say about the season;
- a champion that truly got worse (trained on one airport's flights only, then served to all) is rolled
  back once ``rollback_min_samples`` answers are labelled, by a paired comparison of both versions on
  the same rows.

The retraining section is ``RetrainingConfig(enabled=True)``: every gate, threshold and minimum sample is
the shipped default. Only the monitor's windows are sized to the 3,000-row smoke data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raymlops.serving.client import Client
from raymlops.config import RetrainingConfig, load_config
from raymlops.data.stage import run_data_stage
from raymlops.loop.controller import LoopController
from raymlops.monitoring.monitor import stop_monitor
from raymlops.registry.store import CHALLENGER, CHAMPION, Registry
from raymlops.loop.replay import replay_labelled
from raymlops.training.stage import run_training_stage
from tests.helpers import SMOKE_FLIGHTS, SMOKE_WEATHER, free_port, serve_port, smoke_dict, wait_for, write_config

KEY = "verdicts-test-key"
TAKEN = ("retrain", "promote", "discard", "rollback")


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    from ray import serve

    from raymlops.serving.deploy import deploy

    tmp = tmp_path_factory.mktemp("verdicts")
    (tmp / "api.key").write_text(KEY + "\n")
    data = smoke_dict()
    data["training"].update(epochs=8, learning_rate=0.01, early_stopping_patience=3)  # live AUC ~0.75
    data["serving"] = {"port": serve_port(), "api_key_file": str(tmp / "api.key"), "min_replicas": 1,
                       "max_replicas": 1, "cpus_per_replica": 0.25, "watch_interval_s": 0.5}
    data["monitoring"] = {"window_rows": 400, "min_window_rows": 200, "quality_window": 2000,
                          "metrics_port": free_port()}
    path = write_config(tmp, data)
    cfg = load_config(path)
    cfg = cfg.model_copy(update={"retraining": RetrainingConfig(enabled=True)})  # the shipped defaults
    first = run_training_stage(cfg, run_data_stage(cfg), run_name="verdicts-v1")
    assert first.version == "1"
    url = deploy(cfg)
    weather = pd.read_csv(SMOKE_WEATHER)
    rows = pd.read_csv(SMOKE_FLIGHTS).drop(columns=["arr_delay"]).merge(weather, on=["origin", "time_hour"],
                                                                         how="left")
    yield {"cfg": cfg, "url": url, "tmp": tmp, "rows": rows, "registry": Registry.for_config(cfg),
           "name": cfg.model_name, "schema": Client(url).model_info()["input_schema"]}
    serve.shutdown()
    stop_monitor(cfg.model_name, cfg.workdir_path)


def _served_version(url: str, alias: str) -> str | None:
    return ((Client(url).model_info().get(alias)) or {}).get("version")


def test_unchanged_data_replayed_for_twenty_steps_makes_the_loop_take_no_action(served):
    cfg, url = served["cfg"], served["url"]
    april = served["rows"][served["rows"]["time_hour"] >= "2013-04"].reset_index(drop=True)
    assert len(april) > 500
    controller = LoopController(cfg)
    decisions, clock = [], pd.Timestamp("2013-05-01", tz="UTC").timestamp()
    for step, chunk in enumerate(np.array_split(np.arange(len(april)), 10) * 2):  # the month, twice
        with Client(url, api_key=KEY) as client:
            replay_labelled(client, april.iloc[chunk], served["schema"], "delayed", rows_per_request=16)
        decisions += controller.tick(now=clock + step * 86_400)
    kinds = [(d.kind, d.action) for d in decisions]
    print(f"\n20 steps on unchanged data: {sorted(set(kinds))}; drift noted: "
          f"{[d.evidence.get('drift_noted') for d in decisions if d.evidence.get('drift_noted')][:1]}")
    assert len(decisions) == 20 and not [k for k in kinds if k[1] in TAKEN], kinds
    assert served["registry"].version_for_alias(served["name"], CHAMPION) == "1"
    assert served["registry"].version_for_alias(served["name"], CHALLENGER) in (None, "1")  # v1 holds both at first


def test_a_champion_trained_on_one_airport_then_served_to_all_is_rolled_back(served):
    cfg, reg, name, url = served["cfg"], served["registry"], served["name"], served["url"]
    flights = pd.read_csv(SMOKE_FLIGHTS)
    path = served["tmp"] / "ewr-only.csv"
    flights[flights["origin"] == "EWR"].to_csv(path, index=False)
    one_airport = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"sources": [
            cfg.data.sources[0].model_copy(update={"path": str(path)}), cfg.data.sources[1]]}),
        "validation": cfg.validation.model_copy(update={"row_count": cfg.validation.row_count.model_copy(
            update={"min": 100})}),
        "evaluation": cfg.evaluation.model_copy(update={"gates": []})})  # forced through: a bad release
    bad = run_training_stage(one_airport, run_data_stage(one_airport), run_name="ewr-only")
    reg.promote(name, bad.version, reason="a release trained on EWR's flights only")
    reg.move_alias(name, CHALLENGER, None, action="promoted", reason="test")
    controller = LoopController(cfg)
    controller.watch(bad.version, "1")  # what the loop does after its own promotions
    wait_for(lambda: _served_version(url, CHAMPION) == bad.version, timeout_s=30, what="the bad release to serve")

    r = cfg.retraining
    every_airport = served["rows"].sample(frac=1.0, random_state=0).reset_index(drop=True)
    verdicts, sent = [], 0
    for start in range(0, len(every_airport), r.rollback_min_samples):
        with Client(url, api_key=KEY) as client:
            replay_labelled(client, every_airport.iloc[start:start + r.rollback_min_samples], served["schema"],
                            "delayed", rows_per_request=16)
        sent += len(every_airport.iloc[start:start + r.rollback_min_samples])
        (verdict,) = controller.tick()
        verdicts.append(verdict)
        if verdict.action != "wait":
            break
    comparison = verdict.evidence["comparison"]
    print(f"\nrollback after {sent} labelled answers: {verdict.action}: {verdict.reasons or verdict.blocked_by}")
    assert verdict.kind == "rollback" and verdict.action == "rollback", [v.blocked_by or v.reasons for v in verdicts]
    assert comparison["test"].startswith("paired") and comparison["n"] >= r.rollback_min_samples
    assert comparison["high"] < -0.01  # the whole interval breaks 'auc >= champion - 0.01'
    assert sent <= 2 * r.rollback_min_samples, f"rolled back only after {sent} answers"
    assert reg.version_for_alias(name, CHAMPION) == "1"
    assert reg.audit_log(name)[-1].action == "rollback" and "lost live quality" in reg.audit_log(name)[-1].reason
    wait_for(lambda: _served_version(url, CHAMPION) == "1", timeout_s=30, what="the rollback to reach the replicas")
