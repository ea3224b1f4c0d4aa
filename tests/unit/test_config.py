from __future__ import annotations

import json

import pytest
import yaml

from raymlops.config import PipelineConfig, config_json_schema, load_config, parse_config
from raymlops.errors import ConfigError
from tests.helpers import REPO, smoke_dict


@pytest.mark.parametrize("name", ["smoke.yaml", "flights.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.features.target == "delayed"
    assert cfg.serving.host == "127.0.0.1"


def test_unknown_key_names_file_line_and_path(tmp_path):
    path = tmp_path / "bad.yaml"
    data = smoke_dict()
    data["validation"]["columns"]["month"]["maximum"] = 12
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "validation.columns.month.maximum" in msg
    assert "unknown key" in msg
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "maximum" in t)
    assert f"{path}:{line}" in msg


@pytest.mark.parametrize(("where", "shown", "says"), [
    (("validation", "columns", "month", "maximum"), "validation.columns.month.maximum", "did you mean 'max'?"),
    (("data", "sources", 0, "colums"), "data.sources[0].colums", "did you mean 'columns'?"),  # a tagged union
    (("data", "sources", 0, "csv", "delimeter"), "data.sources[0].csv.delimeter", "did you mean 'delimiter'?"),
    (("data", "split", "colum"), "data.split.colum", "did you mean 'column'?"),
    (("trainig",), "trainig", "did you mean 'training'"),
    (("training", "Epochs"), "training.Epochs", "did you mean 'epochs'?"),
    (("training", "zzz"), "training.zzz", "allowed here: batch_size, cpus_per_worker, early_stopping_patience, epochs"),
])
def test_unknown_key_says_which_valid_key_is_closest(where, shown, says):
    """Issue 15: the closest valid names come from the schema at that place in the config."""
    data = smoke_dict()
    node = data
    for part in where[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[where[-1]] = 1
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    (problem,) = info.value.problems
    assert f"{shown}: unknown key" in problem and says in problem, problem


def test_every_problem_is_reported_at_once(tmp_path):
    data = smoke_dict()
    data["data"]["joins"][0]["right"] = "wether"
    data["training"] = {"epochs": 0}
    del data["features"]["target"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    problems = info.value.problems
    assert any("features.target" in p and "required" in p for p in problems)
    assert any("training.epochs" in p for p in problems)


def test_cross_field_checks_name_path_and_fix():
    data = smoke_dict()
    data["data"]["joins"][0]["right"] = "wether"
    data["validation"]["columns"]["day"]["min"] = 40
    data["features"]["numeric"].append({"column": "delayed"})
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    text = "\n".join(info.value.problems)
    assert "data.joins[0].right" in text and "unknown source 'wether'" in text
    assert "validation.columns.day" in text and "greater than max" in text
    assert "is the target" in text


def test_tuning_every_candidate_window_is_refused_with_the_fix():
    data = smoke_dict()
    data["retraining"] = {"tune": True, "candidate_windows": [None]}
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    assert "retraining" in "\n".join(info.value.problems) and "turn one of them off" in str(info.value)
    data["retraining"] = {"candidate_windows": [None, 0]}
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    assert "retraining.candidate_windows[1]" in str(info.value)


def test_a_weight_column_must_be_its_own_column_and_recency_weights_need_a_time_split():
    data = smoke_dict()
    data["features"]["weight_column"] = data["features"]["target"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    assert "features.weight_column" in str(info.value) and "column of its own" in str(info.value)
    data = smoke_dict()
    data["data"]["split"] = {"type": "random"}
    data["retraining"] = {"half_life_days": 30}
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    assert "retraining.half_life_days" in str(info.value) and "time split" in str(info.value)


def test_yaml_syntax_error_has_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata:\n  sources: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(path)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_random_split_fractions_must_sum_to_one():
    data = smoke_dict()
    data["data"]["split"] = {"type": "random", "train": 0.5, "validation": 0.1, "test": 0.1}
    with pytest.raises(ConfigError, match="data.split"):
        parse_config(data)


def test_config_is_frozen_and_hash_ignores_location(tmp_path):
    a = parse_config(smoke_dict(), base_dir="/a")
    b = parse_config(smoke_dict(), base_dir="/b")
    assert a.config_hash() == b.config_hash()
    with pytest.raises(Exception):
        a.name = "other"


def test_json_schema_describes_every_section():
    schema = config_json_schema()
    props = schema["properties"]
    for section in ("data", "validation", "features", "model", "training", "tuning", "evaluation",
                    "registry", "serving", "monitoring", "retraining"):
        assert section in props
    assert "base_dir" not in props
    json.dumps(schema)


def test_grid_search_takes_finite_dimensions_and_one_pass_by_default():
    data = smoke_dict()
    data["tuning"] = {"enabled": True, "search_alg": "grid",
                      "search_space": {"batch_size": {"type": "choice", "values": [64, 128]},
                                       "embedding_dim": {"type": "int", "low": 2, "high": 4}}}
    tuning = parse_config(data, source="x.yaml").tuning
    assert tuning.num_samples == 1 and tuning.planned_trials() == 6
    data["tuning"]["num_samples"] = 2
    assert parse_config(data, source="x.yaml").tuning.planned_trials() == 12
    data["tuning"]["search_space"]["learning_rate"] = {"type": "loguniform", "low": 1e-4, "high": 1e-2}
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    assert "tuning" in "\n".join(info.value.problems) and "learning_rate is continuous" in "\n".join(info.value.problems)


def test_a_grid_becomes_tune_grid_searches_with_list_choices_by_index():
    from raymlops.training.tuning import search_space

    data = smoke_dict()
    data["tuning"] = {"enabled": True, "search_alg": "grid",
                      "search_space": {"hidden_sizes": {"type": "choice", "values": [[32], [64, 32]]},
                                       "embedding_dim": {"type": "int", "low": 2, "high": 3}}}
    space, lookups = search_space(parse_config(data, source="x.yaml"))
    assert space == {"hidden_sizes": {"grid_search": [0, 1]}, "embedding_dim": {"grid_search": [2, 3]}}
    assert lookups == {"hidden_sizes": [[32], [64, 32]]}


def test_gates_are_checked_against_the_tasks_metrics_when_the_config_loads():
    """A misspelled metric or an unreadable number fails at load time, not after training."""
    data = smoke_dict()
    data["evaluation"] = {"gates": ["acc >= 0.6", "auc >= 1.2.3"]}
    data["retraining"] = {"promote_gate": "rmse <= champion + 0"}
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="x.yaml")
    text = str(err.value)
    assert "evaluation.gates[0]: gate 'acc >= 0.6' names metric 'acc'" in text and "did you mean 'auc'?" in text
    assert "evaluation.gates[1]: cannot read the number '1.2.3'" in text
    assert "retraining.promote_gate: gate 'rmse <= champion + 0' names metric 'rmse', which a classification" in text


def test_a_regression_pipeline_gets_gates_it_can_judge():
    data = smoke_dict()
    data["model"] = {"task": "regression"}
    data["evaluation"] = {"gates": ["r2 >= 0.1"]}
    cfg = parse_config(data, source="x.yaml")
    assert cfg.retraining.promote_gate.startswith("r2 ") and cfg.retraining.rollback_gate.startswith("r2 ")
    data["retraining"] = {"rollback_gate": "mae <= champion + 5"}
    cfg = parse_config(data, source="x.yaml")
    assert cfg.retraining.rollback_gate == "mae <= champion + 5" and cfg.retraining.promote_gate.startswith("r2 ")
    data["evaluation"] = {"gates": ["auc >= 0.6"]}
    with pytest.raises(ConfigError, match="names metric 'auc', which a regression model does not report"):
        parse_config(data, source="x.yaml")


def test_auto_workers_train_small_cpu_runs_in_the_driver_and_tuning_always_on_workers():
    from raymlops.config import TrainingConfig

    auto = TrainingConfig()
    assert auto.num_workers == "auto"
    assert auto.resolved_workers(1_824) == 0 and auto.resolved_workers(auto.local_max_rows) == 0
    assert auto.resolved_workers(auto.local_max_rows + 1) == 1
    assert TrainingConfig(use_gpu=True).resolved_workers(10) == 1
    assert auto.resolved_workers(10, tuning=True) == 1
    assert TrainingConfig(num_workers=0).resolved_workers(10**9) == 0
    assert TrainingConfig(num_workers=3).resolved_workers(10) == 3
    assert TrainingConfig(num_workers=0).resolved_workers(10, tuning=True) == 1  # a retrain's copy, say
    data = smoke_dict()
    data["training"]["num_workers"] = 0
    data["tuning"] = {"enabled": True}
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    assert info.value.problems == [
        "x.yaml: training.num_workers: 0 trains in the driver, but tuning runs each trial on Ray Train workers that report "
        "to the scheduler; use 1 or more (or 'auto') with tuning.enabled"], info.value.problems
    with pytest.raises(ConfigError):
        parse_config({**smoke_dict(), "training": {"num_workers": -1}}, source="x.yaml")


def test_trials_run_at_once_are_what_the_free_cpus_hold():
    from raymlops.training.tuning import concurrent_trials

    assert concurrent_trials(2, 0.51, total_cpus=2, free_cpus=2) == 2
    assert concurrent_trials(4, 0.51, total_cpus=2, free_cpus=1.0) == 1  # another job holds a CPU
    assert concurrent_trials(2, 1.01, total_cpus=2, free_cpus=2) == 1
    assert concurrent_trials(2, 0.51, total_cpus=2, free_cpus=0.4) == 0
    assert concurrent_trials(3, 0.5, total_cpus=1.5, free_cpus=1.5) == 3


def test_a_search_with_no_report_for_the_stall_timeout_is_stopped_and_says_for_how_long():
    import time

    from raymlops.training.tuning import _StallStopper

    stopper = _StallStopper(0.2)
    assert not stopper.stop_all()
    time.sleep(0.1)
    assert not stopper("t1", {"val_loss": 1.0}) and not stopper.stop_all()  # a report restarts the clock
    time.sleep(0.25)
    assert stopper.stop_all() and stopper.stalled_for > 0.2
    assert stopper.stop_all()  # stays stopped: every trial is stopped, not only the next one


@pytest.mark.parametrize("url", ["postgresql://etl:hunter2@db.internal:5432/flights",
                                 "postgresql://etl@db.internal/flights?password=hunter2",
                                 "postgresql://etl@db.internal/flights?sslmode=require&PWD=hunter2"])
def test_a_password_in_a_sql_url_is_refused_when_the_config_loads(url):
    """Issue 18.7: `?password=` got past the check that refused `user:password@`."""
    cfg = smoke_dict()
    cfg["data"]["sources"].append({"type": "sql", "name": "db", "url": url, "query": "select 1"})
    with pytest.raises(ConfigError, match="url holds a password.*password_env") as info:
        parse_config(cfg)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("url", "says"), [
    ("postgresql://mlflow:hunter2@db:5432/mlflow", "lock_url holds a password"),
    ("postgresql://mlflow@db:5432/mlflow?password=hunter2", "lock_url holds a password"),
    ("mysql://mlflow@db/mlflow", "a postgresql://user@host:port/dbname URL"),
])
def test_the_registry_lock_url_is_postgresql_without_a_password(url, says):
    cfg = smoke_dict()
    cfg["registry"] = {"lock_url": url, "lock_password_env": "PGPASSWORD"}
    with pytest.raises(ConfigError, match=says) as info:
        parse_config(cfg)
    assert "hunter2" not in str(info.value)
    cfg["registry"]["lock_url"] = "postgresql://mlflow@db:5432/mlflow"
    assert parse_config(cfg).registry.lock_timeout_s == 120
