"""The registry against real MLflow on a temp SQLite store (no Ray needed): aliases, audit, races."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from raymlops.errors import RegistryError
from raymlops.registry.store import CHAMPION, Registry

pytestmark = pytest.mark.integration
NAME = "m"


def _registry_with_versions(workdir, n: int) -> Registry:
    reg = Registry.for_workdir(workdir)
    run_id = reg.start_run("exp", "r")
    for _ in range(n):
        reg.register(NAME, run_id, "model", tags={"raymlops.data_fingerprint": "x"})
    return reg


def _promote_worker(workdir: str, version: int, barrier) -> None:
    reg = Registry.for_workdir(workdir)
    barrier.wait()
    reg.promote(NAME, version, reason=f"worker {version}")


def test_eight_concurrent_promoters_leave_one_consistent_champion(tmp_path):
    reg = _registry_with_versions(tmp_path, 8)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_promote_worker, args=(str(tmp_path), v, barrier)) for v in range(1, 9)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    moves = reg.audit_log(NAME)
    assert len(moves) == 8
    assert sorted(int(m.to_version) for m in moves) == list(range(1, 9))
    # Each move saw the previous one: the log is a chain, and its end is the champion.
    assert moves[0].from_version is None
    assert all(moves[i].from_version == moves[i - 1].to_version for i in range(1, 8))
    assert reg.version_for_alias(NAME, CHAMPION) == moves[-1].to_version


def test_rollback_walks_back_through_champions_and_stops(tmp_path):
    reg = _registry_with_versions(tmp_path, 3)
    for v in (1, 2, 3):
        reg.promote(NAME, v)
    assert reg.rollback(NAME).to_version == "2"
    assert reg.version_for_alias(NAME, CHAMPION) == "2"
    assert reg.rollback(NAME).to_version == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback(NAME)
    assert reg.version_for_alias(NAME, CHAMPION) == "1"
    assert [m.action for m in reg.audit_log(NAME)] == ["promote"] * 3 + ["rollback"] * 2


def test_promoting_a_missing_version_changes_nothing(tmp_path):
    reg = _registry_with_versions(tmp_path, 1)
    reg.promote(NAME, 1)
    with pytest.raises(RegistryError, match="no version 7"):
        reg.promote(NAME, 7)
    assert reg.version_for_alias(NAME, CHAMPION) == "1"
    assert len(reg.audit_log(NAME)) == 1


def test_versions_registered_concurrently_are_unique_and_contiguous(tmp_path):
    reg = Registry.for_workdir(tmp_path)
    run_id = reg.start_run("exp", "r")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_register_worker, args=(str(tmp_path), run_id)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 6
    assert sorted(int(v.version) for v in reg.list_versions(NAME)) == list(range(1, 7))


def _register_worker(workdir: str, run_id: str) -> None:
    time.sleep(0.01)
    Registry.for_workdir(workdir).register(NAME, run_id, "model", tags={})
