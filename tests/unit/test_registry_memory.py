"""The Registry's logic through the in-memory MLflow client (registry/memory.py): alias moves and their audit
log, absent versus unreachable, interrupted moves and runs. The double itself is held to MLflow: it covers
every client call raymlops makes, with MlflowClient's signatures, and answers a script of calls as a real
SQLite store does."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from pathlib import Path

import pytest

from raymlops.errors import ModelPackageError, RegistryError
from raymlops.registry.memory import InMemoryMlflowClient
from raymlops.registry.store import (CHALLENGER, CHAMPION, MANIFEST_TAG, AliasMove, Registry, alias_absent,
                                     is_unreachable, parse_model_ref)

PACKAGE = Path(__file__).resolve().parents[2] / "raymlops"


@pytest.fixture
def client(tmp_path) -> InMemoryMlflowClient:
    return InMemoryMlflowClient(tmp_path / "store")


@pytest.fixture
def reg(tmp_path, client) -> Registry:
    return Registry(client.tracking_uri, tmp_path / "work", client=client)


def _register(reg: Registry, n: int, name: str = "m") -> list[str]:
    """``n`` versions of ``name``, each from its own run."""
    return [reg.register(name, reg.start_run("exp", f"train-{i}"), "model", {"i": str(i)}) for i in range(n)]


def _audit_lines(reg: Registry) -> list[dict]:
    return [json.loads(line) for line in reg.audit_path.read_text().splitlines()] if reg.audit_path.exists() else []


# ------------------------------------------------------------------------------- the double, held to MLflow
def _client_calls() -> set[str]:
    """Every MlflowClient method called as ``<something>.client.NAME(`` anywhere in the package."""
    from mlflow.tracking import MlflowClient

    names = {n for f in PACKAGE.rglob("*.py") for n in re.findall(r"\.client\.(\w+)\(", f.read_text())}
    return {n for n in names if hasattr(MlflowClient, n)}


def test_the_double_has_every_client_call_raymlops_makes_with_mlflows_signature():
    from mlflow.tracking import MlflowClient

    calls = _client_calls()
    assert {"get_model_version_by_alias", "set_registered_model_alias", "search_runs", "log_batch"} <= calls
    def params(method) -> list[tuple]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]

    for name in sorted(calls):
        assert hasattr(InMemoryMlflowClient, name), f"raymlops calls MlflowClient.{name}; the double lacks it"
        assert params(getattr(InMemoryMlflowClient, name)) == params(getattr(MlflowClient, name)), name


def _script(c) -> list[tuple]:
    """What a client answers to the calls raymlops makes, errors included (code and message)."""
    from mlflow.entities import Metric, Param, RunTag

    seen: list[tuple] = []

    def see(label: str, call) -> None:
        try:
            seen.append((label, call()))
        except Exception as exc:  # run ids differ; a real SQLite store appends its SQL error after " Error: "
            text = re.sub(r"[0-9a-f]{32}", "RUN_ID", str(exc).split(" Error: ")[0])
            seen.append((label, type(exc).__name__, getattr(exc, "error_code", None), text))

    exp = c.create_experiment("exp")
    see("experiments", lambda: (exp, c.get_experiment_by_name("Default").experiment_id, c.get_experiment_by_name("no")))
    see("duplicate experiment", lambda: c.create_experiment("exp"))
    run = c.create_run(exp, run_name="r1", tags={"a": "b"})
    rid = run.info.run_id
    see("run", lambda: (run.info.status, run.info.run_name, run.info.user_id, run.info.end_time, run.data.tags,
                        run.info.artifact_uri.endswith(f"/{rid}/artifacts")))
    see("no run", lambda: c.get_run("0" * 32))
    see("run in no experiment", lambda: c.create_run("999", run_name="x"))
    for label, call in [("no model", lambda: c.get_registered_model("m")),
                        ("alias of no model", lambda: c.get_model_version_by_alias("m", CHAMPION)),
                        ("version of no model", lambda: c.get_model_version("m", "1")),
                        ("versions of no model", lambda: list(c.search_model_versions("name = 'm'"))),
                        ("set alias of no model", lambda: c.set_registered_model_alias("m", CHAMPION, "1")),
                        ("delete alias of no model", lambda: c.delete_registered_model_alias("m", CHAMPION)),
                        ("register to no model", lambda: c.create_model_version("m", "file:///x", run_id=rid))]:
        see(label, call)
    see("model", lambda: c.create_registered_model("m", description="d").aliases)
    see("duplicate model", lambda: c.create_registered_model("m"))
    see("no alias", lambda: c.get_model_version_by_alias("m", CHAMPION))
    see("no version", lambda: c.get_model_version("m", "1"))
    see("not a version", lambda: c.get_model_version("m", "abc"))
    see("alias to no version", lambda: c.set_registered_model_alias("m", CHAMPION, "1"))
    see("delete no alias", lambda: c.delete_registered_model_alias("m", CHAMPION))
    mv = c.create_model_version("m", "file:///src", run_id=rid, tags={"t": 1}, description="d")
    see("version", lambda: (mv.version, mv.run_id == rid, mv.source, mv.tags, mv.aliases, mv.status, mv.name))
    c.create_model_version("m", "file:///y")
    c.set_registered_model_alias("m", CHAMPION, "1")
    c.set_registered_model_alias("m", CHALLENGER, 2)
    see("aliases", lambda: (c.get_model_version("m", 1).aliases, c.get_registered_model("m").aliases,
                            c.get_model_version_by_alias("m", CHALLENGER).version))
    see("search", lambda: [(v.version, v.aliases) for v in c.search_model_versions("name = 'm'")])
    c.create_registered_model("a")
    see("models", lambda: [(m.name, m.aliases) for m in c.search_registered_models(max_results=5)])
    c.delete_registered_model_alias("m", CHALLENGER)
    see("deleted alias", lambda: c.get_registered_model("m").aliases)
    c.log_batch(rid, metrics=[Metric("loss", 1.0, 1, 0), Metric("loss", 0.5, 2, 1), Metric("loss", 0.7, 3, 0)],
                params=[Param("p", "1")], tags=[RunTag("x", "y")])
    see("changed param", lambda: c.log_batch(rid, params=[Param("p", "2")]))
    c.set_terminated(rid, status="KILLED")
    see("ended run", lambda: (c.get_run(rid).data.metrics, c.get_run(rid).data.params, c.get_run(rid).info.status))
    see("bad status", lambda: c.set_terminated(rid, status="WHAT"))
    c.create_run(exp, run_name="r2", tags={"mlflow.parentRunId": rid})
    killed = "tags.`a` = 'b' and attributes.status = 'KILLED'"
    see("found", lambda: [r.info.run_name for r in c.search_runs([exp], killed)])
    see("children", lambda: [r.info.run_name for r in c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{rid}'")])
    see("latest", lambda: [r.info.run_name for r in c.search_runs([exp], order_by=["attributes.start_time DESC"],
                                                                    max_results=1)])
    see("bad filter", lambda: c.search_runs([exp], "tags.x = "))
    return seen


def test_the_double_answers_as_a_real_sqlite_store_does(tmp_path):
    """The one test here with a real store: the double's answers and errors are MLflow's, call by call."""
    real = Registry.for_workdir(tmp_path / "real").client
    assert _script(InMemoryMlflowClient(tmp_path / "memory")) == _script(real)


def test_an_unreachable_double_refuses_every_call_as_an_outage_and_changes_nothing(client):
    client.unreachable = True
    for name in sorted(_client_calls()):
        method = getattr(client, name)
        required = [p for p in inspect.signature(method).parameters.values() if p.default is inspect.Parameter.empty]
        with pytest.raises(Exception) as err:
            method(*["m"] * len(required))
        assert is_unreachable(err.value) and not alias_absent(err.value), name
    client.unreachable = False
    assert [m.name for m in client.search_registered_models()] == []  # create_registered_model('m') did not happen


# ------------------------------------------------------------------------------- the Registry through the double
def test_registered_versions_keep_their_run_source_and_tags(reg, client):
    assert _register(reg, 2) == ["1", "2"]
    run_id = reg.version_info("m", 2).run_id
    assert reg.version_info("m", 2).source == f"{client.get_run(run_id).info.artifact_uri}/model"
    assert reg.version_info("m", "1").tags == {"i": "0"}
    assert [v.version for v in reg.list_versions("m")] == [1, 2]
    assert reg.list_versions("absent") == []
    assert [m.name for m in reg.list_models()] == ["m"]
    assert reg.registered_manifest("m", 1) is None  # no manifest tag: an old version, warned about
    with pytest.raises(RegistryError, match="model 'm' has no version 3"):
        reg.version_info("m", 3)


def test_promotions_rollbacks_and_the_audit_log_replay_the_champions(reg):
    _register(reg, 3)
    for v in ("1", "2", "3"):
        reg.promote("m", v, reason=f"v{v} won")
    assert reg.champion_history("m") == ["1", "2", "3"]
    move = reg.rollback("m", reason="v3 regressed")
    assert (move.from_version, move.to_version, move.action, move.state) == ("3", "2", "rollback", "done")
    assert reg.version_for_alias("m", CHAMPION) == "2" and reg.champion_history("m") == ["1", "2"]
    assert reg.rollback("m").to_version == "1" and reg.champion_history("m") == ["1"]
    with pytest.raises(RegistryError, match=r"no previous champion to roll back to \(champions so far: \['1'\]\)"):
        reg.rollback("m")
    assert [(m.from_version, m.to_version, m.action) for m in reg.audit_log("m")] == [
        (None, "1", "promote"), ("1", "2", "promote"), ("2", "3", "promote"), ("3", "2", "rollback"),
        ("2", "1", "rollback")]
    assert [line["state"] for line in _audit_lines(reg)] == ["intent", "done"] * 5  # each move announced first
    assert reg.pending_moves() == []


def test_an_alias_can_be_removed_and_a_move_to_no_version_writes_nothing(reg):
    _register(reg, 2)
    reg.move_alias("m", CHALLENGER, 2, action="register", reason="passed")
    assert reg.version_for_alias("m", CHALLENGER) == "2"
    removed = reg.move_alias("m", CHALLENGER, None, action="discard", reason="lost")
    assert (removed.from_version, removed.to_version) == ("2", None)
    assert reg.version_for_alias("m", CHALLENGER) is None
    lines = len(_audit_lines(reg))
    with pytest.raises(RegistryError, match="has no version 7"):
        reg.move_alias("m", CHALLENGER, 7, action="register", reason="typo")
    assert len(_audit_lines(reg)) == lines  # refused before its intent was written
    assert reg.champion_history("m") == []  # challenger moves are not champions


def test_an_absent_alias_or_model_is_none_but_an_outage_is_an_error(reg, client):
    assert reg.version_for_alias("m", CHAMPION) is None  # no model
    _register(reg, 1)
    assert reg.version_for_alias("m", CHAMPION) is None  # a model without the alias
    client.unreachable = True
    with pytest.raises(RegistryError, match="cannot be reached, so where 'm'@champion points is unknown") as err:
        reg.version_for_alias("m", CHAMPION)
    assert is_unreachable(err.value)
    with pytest.raises(RegistryError, match="cannot be reached"):  # not "has no version with alias"
        reg.resolve("m")
    with pytest.raises(RegistryError, match="cannot be reached, so the versions of model 'm' are unknown"):
        reg.list_versions("m")  # an outage is not "no versions" (it used to answer [])
    client.unreachable = False
    assert [v.version for v in reg.list_versions("m")] == [1]


def test_a_promotion_during_an_outage_leaves_the_alias_and_the_audit_log_alone(reg, client):
    _register(reg, 2)
    reg.promote("m", 1)
    before = _audit_lines(reg)
    client.unreachable = True
    with pytest.raises(RegistryError, match="cannot be reached"):
        reg.promote("m", 2)
    client.unreachable = False
    assert _audit_lines(reg) == before and reg.version_for_alias("m", CHAMPION) == "1"


@pytest.mark.parametrize("moved", [True, False])
def test_a_move_cut_off_by_an_outage_stays_pending_until_the_registry_answers(reg, client, monkeypatch, moved):
    """The server went away during the alias write: whether the alias moved is unknown, so the intent stays
    pending (an outage settles nothing) and the next move, once the registry answers, records how it ended."""
    _register(reg, 2)
    reg.promote("m", 1)
    write = client.set_registered_model_alias

    def write_then_lose_the_server(*args):
        if moved:
            write(*args)
        client.unreachable = True
        return write(*args)  # refused: the caller never hears back

    with monkeypatch.context() as patched:
        patched.setattr(client, "set_registered_model_alias", write_then_lose_the_server)
        with pytest.raises(RegistryError, match="cannot be reached"):
            reg.promote("m", 2, reason="v2 won")
    assert [(m.from_version, m.to_version) for m in reg.pending_moves("m")] == [("1", "2")]
    lines = len(_audit_lines(reg))
    with pytest.raises(RegistryError, match="cannot be reached"):  # still down: nothing is settled
        reg.move_alias("m", CHALLENGER, 1, action="register", reason="x")
    assert len(_audit_lines(reg)) == lines and len(reg.pending_moves("m")) == 1
    client.unreachable = False
    reg.move_alias("m", CHALLENGER, 1, action="register", reason="x")
    assert reg.pending_moves() == []
    settled = [line for line in _audit_lines(reg) if line["reason"].startswith("v2 won (settled")]
    assert [line["state"] for line in settled] == ["done" if moved else "abandoned"]
    assert reg.champion_history("m") == (["1", "2"] if moved else ["1"])


def test_intents_left_by_a_dead_process_are_settled_by_where_the_alias_points_before_a_rollback(reg, client):
    _register(reg, 3)
    reg.promote("m", 1)
    client.set_registered_model_alias("m", CHALLENGER, "3")

    def intent(alias: str, from_version: str, to_version: str, t: float) -> None:
        reg._append_audit(AliasMove(time=t, model="m", alias=alias, from_version=from_version, to_version=to_version,
                                    action="promote", reason=f"{alias} to {to_version}", actor="dead", state="intent"))

    intent(CHAMPION, "1", "2", 1.0)
    client.set_registered_model_alias("m", CHAMPION, "2")  # its write landed before the process died
    intent(CHAMPION, "1", "3", 2.0)  # died before writing
    intent(CHALLENGER, "3", "3", 3.0)  # pointed where it already pointed: nothing shows that it happened
    move = reg.rollback("m")  # the landed promotion counts before the history is read
    assert (move.from_version, move.to_version) == ("2", "1")
    settled = {line["reason"].split(" (")[0]: line["state"]
               for line in _audit_lines(reg) if "(settled" in line["reason"]}
    assert settled == {"champion to 2": "done", "champion to 3": "abandoned", "challenger to 3": "abandoned"}
    assert reg.pending_moves() == []


def test_a_refused_alias_write_is_recorded_as_abandoned_at_once(reg, client, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    _register(reg, 2)
    reg.promote("m", 1)

    def refuse(*args):
        raise MlflowException("permission denied", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(client, "set_registered_model_alias", refuse)
    with pytest.raises(RegistryError, match="setting alias 'champion' of 'm' to version 2 failed: permission denied"):
        reg.promote("m", 2)
    assert [line["state"] for line in _audit_lines(reg)][-2:] == ["intent", "abandoned"]
    assert reg.pending_moves() == [] and reg.champion_history("m") == ["1"]


def test_model_references_parse_and_resolve_to_versions_that_exist(reg):
    assert parse_model_ref("m") == ("m", CHAMPION, None)
    assert parse_model_ref("m@challenger") == ("m", CHALLENGER, None)
    assert parse_model_ref("team/m/3") == ("team/m", None, "3")
    for bad in ("", "m@", "@champion", "m/", "/3", "m/x"):
        with pytest.raises(RegistryError):
            parse_model_ref(bad)
    _register(reg, 2)
    with pytest.raises(RegistryError, match="model 'm' has no version with alias 'champion'"):
        reg.resolve("m")
    reg.promote("m", 2)
    assert reg.resolve("m") == ("m", "2") and reg.resolve("m/1") == ("m", "1")
    with pytest.raises(RegistryError, match="has no version with alias 'challenger'"):
        reg.resolve("m@challenger")
    with pytest.raises(RegistryError, match="model 'm' has no version 9"):
        reg.resolve("m/9")


def test_attempts_left_running_are_killed_on_resume_or_failed_with_the_reason(reg, client):
    def attempt(name: str, parent: str | None = None) -> str:
        return reg.start_run("exp", name, tags={} if parent else {"raymlops.run_name": name}, parent_run_id=parent)

    died = attempt("nightly")
    trial, done_trial = attempt("trial-0", died), attempt("trial-1", died)
    reg.end_run(done_trial)
    finished, other = attempt("nightly"), attempt("weekly")
    reg.end_run(finished)
    rerun = attempt("nightly")
    assert reg.end_interrupted_runs("exp", "nightly", resumed_by=rerun) == [died]
    status = {r: client.get_run(r).info.status for r in (died, trial, done_trial, finished, other, rerun)}
    assert status == {died: "KILLED", trial: "KILLED", done_trial: "FINISHED", finished: "FINISHED",
                      other: "RUNNING", rerun: "RUNNING"}
    assert client.get_run(trial).data.tags["raymlops.resumed_by"] == rerun
    assert "raymlops.resumed_by" not in client.get_run(done_trial).data.tags
    assert reg.fail_running_attempts("exp", "nightly", reason="Ray stopped " + "x" * 6000) == [rerun]
    failed = client.get_run(rerun)
    assert failed.info.status == "FAILED" and failed.info.end_time is not None
    reason = failed.data.tags["raymlops.failure"]
    assert reason.startswith("Ray stopped") and len(reason) == 5000
    assert client.get_run(other).info.status == "RUNNING"


def test_params_metrics_and_tags_land_on_the_run(reg, client):
    run = reg.start_run("exp", "r")
    reg.log_params(run, {f"p{i:03d}": i for i in range(250)} | {"long": "y" * 7000})
    reg.log_metrics(run, [{"epoch": 0, "loss": 1.0, "ok": True}, {"epoch": 1, "loss": 0.5, "auc": float("nan")},
                          {"epoch": 2, "acc": 3}])
    reg.set_tags(run, {"stage": 2})
    data = client.get_run(run).data
    assert len(data.params) == 251 and data.params["p249"] == "249" and len(data.params["long"]) == 6000
    assert data.metrics == {"loss": 0.5, "acc": 3.0}  # the latest epoch's value; booleans and NaN are not logged
    assert data.tags["stage"] == "2" and data.tags["mlflow.runName"] == "r"


def test_a_registered_package_comes_back_verified_and_a_tampered_copy_is_refused(reg, client, tmp_path):
    from raymlops.model.packaging import MANIFEST, PACKAGE_FORMAT, manifest_sha256

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "weights.bin").write_bytes(b"\x00\x01weights")
    files = {"weights.bin": hashlib.sha256((pkg / "weights.bin").read_bytes()).hexdigest()}
    (pkg / MANIFEST).write_text(json.dumps({"format": PACKAGE_FORMAT, "files": files}))
    run = reg.start_run("exp", "r")
    reg.log_artifacts(run, pkg, "model")
    version = reg.register("m", run, "model", {MANIFEST_TAG: manifest_sha256(pkg)})
    local = reg.local_package("m", version)
    assert local == reg.workdir / "packages" / "m-v1" / "model"
    assert (local / "weights.bin").read_bytes() == b"\x00\x01weights"
    stored = Path(client.get_run(run).info.artifact_uri.removeprefix("file://")) / "model" / "weights.bin"
    stored.write_bytes(b"tampered")
    with pytest.raises(ModelPackageError, match="weights.bin does not match the checksum"):
        reg.download_package("m", version, tmp_path / "again")


@pytest.mark.parametrize("name", ["o'brien", "back\\slash", "it's \"quoted\" \\'"])
def test_attempts_of_a_run_named_with_quotes_or_backslashes_are_found(reg, client, name):
    """The name was matched inside MLflow's filter, whose parser keeps the backslash escaping a quote: such
    a run was never found, so a rerun left it RUNNING and a dead pipeline's run was never marked FAILED."""
    died = reg.start_run("exp", name, tags={"raymlops.run_name": name})
    other = reg.start_run("exp", "plain", tags={"raymlops.run_name": "plain"})
    rerun = reg.start_run("exp", name, tags={"raymlops.run_name": name})
    assert reg.end_interrupted_runs("exp", name, resumed_by=rerun) == [died]
    assert reg.fail_running_attempts("exp", name, reason="Ray stopped") == [rerun]
    assert [client.get_run(r).info.status for r in (died, rerun, other)] == ["KILLED", "FAILED", "RUNNING"]


def test_aliases_say_where_each_alias_points_and_nothing_for_an_unknown_model(reg, client):
    """Versions found by a search carry no aliases (as on MLflow's SQL stores), so `raymlops status` showed
    every version without its aliases; Registry.aliases reads them from the registered model."""
    _register(reg, 3)
    reg.promote("m", "2", reason="better")
    reg.move_alias("m", "challenger", "3", action="canary", reason="new")
    assert all(not v.aliases for v in reg.list_versions("m"))  # what status used to read
    assert reg.aliases("m") == {"champion": "2", "challenger": "3"}
    assert reg.aliases("no-such-model") == {}
    client.unreachable = True
    with pytest.raises(RegistryError, match="cannot read the aliases of model 'm'"):
        reg.aliases("m")
