"""Training, tuning, evaluation and registration on the session's real local Ray and a real MLflow store."""

from __future__ import annotations


import pytest
from mlflow.tracking import MlflowClient

from raymlops.config import load_config
from raymlops.data.stage import run_data_stage
from raymlops.errors import GateFailed
from raymlops.registry.store import CHALLENGER, CHAMPION, Registry
from raymlops.training.stage import run_training_stage
from raymlops.training.trainer import run_training
from tests.helpers import (own_ray_processes, smoke_dict, ten_times_the_smoke_flights, train_killing_a_worker,
                           write_config)

pytestmark = pytest.mark.integration


def _cfg(tmp_path, **sections):
    data = smoke_dict()
    data.update(sections)
    return load_config(write_config(tmp_path, data))


def test_pipeline_registers_gated_version_with_lineage(ray_session, tmp_path):
    cfg = _cfg(tmp_path)
    data = run_data_stage(cfg)
    result = run_training_stage(cfg, data, run_name="smoke-a")
    assert result.version == "1" and set(result.aliases) == {CHALLENGER, CHAMPION}
    assert result.metrics["rows"] == data.split_rows["test"]
    # The reported AUC is the registered package's, recomputed here as a rank statistic (Mann-Whitney)
    from scipy.stats import rankdata

    from raymlops.model.batch import score_frame
    from raymlops.model.packaging import load_package

    test = data.raw["test"].to_pandas()
    scores = score_frame(load_package(result.package_dir), test)
    y = test[cfg.features.target].to_numpy().astype(int)
    ranks = rankdata(scores)
    positives = int(y.sum())
    auc = (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * (len(y) - positives))
    assert auc == pytest.approx(result.metrics["auc"], abs=1e-6) and auc >= 0.55  # the shipped gate
    assert set(result.slices["origin"]) <= {"EWR", "JFK", "LGA"}

    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["raymlops.data_fingerprint"] == data.snapshot.snapshot_id
    assert run.data.tags["raymlops.config_hash"] == cfg.config_hash()
    import ray
    import torch
    assert run.data.tags["raymlops.system.ray"] == ray.__version__
    assert run.data.tags["raymlops.system.torch"] == torch.__version__
    assert float(run.data.tags["raymlops.system.cluster_cpus"]) == 2.0  # the session's local Ray
    assert "val_loss" in run.data.metrics and "test_auc" in run.data.metrics
    assert len(client.get_metric_history(result.run_id, "val_loss")) == result.training.epochs_run
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert {"model/weights.safetensors", "model/features.json", "model/manifest.json",
            "model/reference_profile.json"} <= artifacts
    mv = client.get_model_version_by_alias(cfg.model_name, CHAMPION)
    assert str(mv.version) == "1" and mv.tags["raymlops.data_fingerprint"] == data.snapshot.snapshot_id
    assert mv.tags["raymlops.run_id"] == result.run_id

    # A second candidate is compared with the champion on the same rows and becomes challenger only.
    second = run_training_stage(cfg, data, run_name="smoke-b")
    assert second.champion_metrics is not None and second.version == "2" and second.aliases == [CHALLENGER]
    assert second.champion_metrics["auc"] == pytest.approx(result.metrics["auc"], abs=1e-9)
    reg = Registry.for_config(cfg)
    assert reg.version_for_alias(cfg.model_name, CHAMPION) == "1"
    assert reg.version_for_alias(cfg.model_name, CHALLENGER) == "2"


def test_failed_gate_leaves_registry_unchanged(ray_session, tmp_path):
    cfg = _cfg(tmp_path, evaluation={"gates": ["auc >= 0.999"]})
    data = run_data_stage(cfg)
    with pytest.raises(GateFailed, match=r"gate 'auc >= 0.999'") as info:
        run_training_stage(cfg, data, run_name="too-strict")
    reg = Registry.for_config(cfg)
    assert reg.list_versions(cfg.model_name) == []
    assert reg.audit_log() == []
    run = reg.client.get_run(info.value.details["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["raymlops.gates"] == "failed"


def test_rerun_with_same_name_resumes_from_checkpoint(ray_session, tmp_path):
    short = _cfg(tmp_path, training={"epochs": 2, "batch_size": 128, "early_stopping_patience": 10})
    data = run_data_stage(short)
    first = run_training(short, data, run_name="resumable")
    assert first.epochs_run == 2
    longer = short.model_copy(update={"training": short.training.model_copy(update={"epochs": 4})})
    resumed = run_training(longer, data, run_name="resumable")
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert resumed.history[:2] == first.history  # the first two epochs were not run again


# Not the shipped 600 s: a search starved of CPUs then fails with its diagnosis (what holds them)
# before pytest's 600 s timeout would cut it off with none. Every epoch here reports within seconds.
STALL_S = 180


def test_asha_stops_poor_trials_early(ray_session, tmp_path):
    cfg = _cfg(tmp_path, training={"epochs": 4, "batch_size": 256, "early_stopping_patience": 10, "cpus_per_worker": 0.5},
               tuning={"enabled": True, "num_samples": 4, "max_concurrent_trials": 2, "search_alg": "optuna",
                       "grace_period": 1, "reduction_factor": 2, "stall_timeout_s": STALL_S,
                       "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 3e-2},
                                        "hidden_sizes": {"type": "choice", "values": [[8], [32, 16]]}}})
    data = run_data_stage(cfg)
    result = run_training_stage(cfg, data, run_name="tuned")
    tuning = result.tuning
    assert len(tuning.trials) == 4 and all(t.status == "ok" for t in tuning.trials)
    assert tuning.total_epochs < 4 * 4, [t.epochs for t in tuning.trials]
    assert max(t.epochs for t in tuning.trials) == 4
    assert result.version == "1"
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert len(children) == 4  # every trial is an MLflow run under the pipeline's run


def test_killed_worker_resumes_from_checkpoint_with_same_result(ray_session, tmp_path):
    data_dict = smoke_dict()
    data_dict["data"]["sources"][0]["path"] = str(ten_times_the_smoke_flights(tmp_path))
    data_dict["training"] = {"num_workers": 2, "epochs": 4, "batch_size": 64, "early_stopping_patience": 10,
                             "max_failures": 2}
    cfg = load_config(write_config(tmp_path, data_dict))
    data = run_data_stage(cfg)
    undisturbed = run_training(cfg, data, run_name="calm")

    disturbed, killed = train_killing_a_worker(lambda: run_training(cfg, data, run_name="stormy"),
                                               cfg.workdir_path / "checkpoints" / "stormy")
    assert killed is not None, "training ended before a worker could be killed after its first checkpoint"
    assert [h["epoch"] for h in disturbed.history] == [0, 1, 2, 3]
    assert any(h["started_at_epoch"] > 0 for h in disturbed.history), f"restarted from scratch: {disturbed.history}"
    assert disturbed.final_metrics["val_loss"] == pytest.approx(undisturbed.final_metrics["val_loss"], rel=0.05)
    assert disturbed.final_metrics["val_auc"] == pytest.approx(undisturbed.final_metrics["val_auc"], abs=0.03)


@pytest.mark.parametrize("family", ["mlp", "lightgbm", "xgboost"])
def test_a_small_run_trains_in_the_driver_keeps_its_checkpoints_and_resumes_by_name(ray_session, tmp_path, family):
    """Local mode (num_workers 'auto' on 1,824 training rows): no worker processes, checkpoints written by
    the loop itself, and a rerun with the same name continues from the newest one."""
    from raymlops.training.trainer import workers_for

    short, long_ = ({"epochs": 2}, {"epochs": 4}) if family == "mlp" else (
        {"num_boost_round": 20, "checkpoint_every": 10, "early_stopping_rounds": 100},
        {"num_boost_round": 40, "checkpoint_every": 10, "early_stopping_rounds": 100})
    data = smoke_dict()
    data["model"] = {"task": "classification", "family": family, **({} if family == "mlp" else short)}
    if family == "mlp":
        data["training"].update(short)
    cfg = load_config(write_config(tmp_path, data))
    stage = run_data_stage(cfg)
    assert cfg.training.num_workers == "auto" and workers_for(cfg, stage) == 0

    def train_workers() -> int:
        return len(own_ray_processes("ray::RayTrainWorker"))

    first = run_training(cfg, stage, run_name="local")
    assert train_workers() == 0
    run_dir = cfg.workdir_path / "checkpoints" / "local"
    assert first.checkpoint_dir.parent == run_dir and first.checkpoint_dir.is_dir()
    assert len(first.history) == (2 if family == "mlp" else 2)  # an epoch, or a checkpoint every 10 rounds

    if family == "mlp":
        data["training"].update(long_)
    else:
        data["model"].update(long_)
    longer = load_config(write_config(tmp_path, data))
    second = run_training(longer, stage, run_name="local")
    starts = [h["started_at_epoch"] for h in second.history]
    resumed_at = 2 if family == "mlp" else 20
    assert starts == [0, 0, resumed_at, resumed_at], starts
    assert len(list(run_dir.glob("checkpoint_*"))) == 2  # the two newest are kept
    assert second.final_metrics["val_auc"] > 0.5
    # Rerun once more (as after a driver that died registering): nothing is left to train, and the run's
    # result is its last checkpoint, not "no epoch completed".
    again = run_training(longer, stage, run_name="local")
    assert again.checkpoint_dir == second.checkpoint_dir and again.history == second.history
