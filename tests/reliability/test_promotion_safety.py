"""Guarantee 8: a promotion that dies at any step leaves the champion on a complete version, the audit log
agreeing with the registry, and rollback working.

The promoting process is killed (os._exit, no cleanup) at each step of `Registry.promote`: after it
announced the move in the audit log but before the alias moved, and after the alias moved but before the
move was recorded as done. The next registry operation settles the interrupted move by where the alias
points. (A replica that dies while loading a new version is restarted by Serve and loads the champion;
a version that fails to load is refused while the current one keeps serving: tests/integration/test_serving.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from raymlops.registry.store import CHAMPION, Registry

pytestmark = pytest.mark.reliability
NAME = "promotion-model"

CRASHING_PROMOTER = textwrap.dedent("""
    import os, sys
    from raymlops.registry.store import Registry
    workdir, point, version = sys.argv[1], sys.argv[2], sys.argv[3]
    reg = Registry.for_workdir(workdir)
    real = reg.client.set_registered_model_alias
    def crash_before(*args, **kwargs):
        os._exit(137)
    def crash_after(*args, **kwargs):
        real(*args, **kwargs)
        os._exit(137)
    reg.client.set_registered_model_alias = crash_before if point == "before_alias_move" else crash_after
    reg.promote("%s", version, reason="doomed promotion")
""" % NAME)


def _registry(tmp_path, versions=3) -> Registry:
    reg = Registry.for_workdir(tmp_path)
    run_id = reg.start_run("promotion", "r")
    for _ in range(versions):
        reg.register(NAME, run_id, "model", tags={})
    reg.promote(NAME, 1)
    reg.promote(NAME, 2)
    return reg


@pytest.mark.parametrize("point,champion_after", [("before_alias_move", "2"), ("after_alias_move", "3")])
def test_a_promotion_killed_at_each_step_leaves_a_consistent_champion_and_rollback_works(
        tmp_path, point, champion_after):
    reg = _registry(tmp_path)
    crashed = subprocess.run([sys.executable, "-c", CRASHING_PROMOTER, str(tmp_path), point, "3"],
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    assert reg.version_for_alias(NAME, CHAMPION) == champion_after
    assert len(reg.pending_moves(NAME)) == 1  # the log shows a move began and never ended

    # Rollback settles the interrupted move first, then goes back one champion from what really happened.
    back = reg.rollback(NAME)
    assert reg.pending_moves(NAME) == []
    chain = [m.to_version for m in reg.audit_log(NAME)]
    if champion_after == "3":
        assert chain == ["1", "2", "3", "2"] and back.from_version == "3" and back.to_version == "2"
    else:
        assert chain == ["1", "2", "1"] and back.from_version == "2" and back.to_version == "1"
    assert reg.version_for_alias(NAME, CHAMPION) == chain[-1]
    # The log and the registry agree move by move: each completed move starts where the previous ended.
    moves = reg.audit_log(NAME)
    assert all(moves[i].from_version == moves[i - 1].to_version for i in range(1, len(moves)))
    settled = [line for line in reg.audit_path.read_text().splitlines() if "settled after an interrupted" in line]
    assert len(settled) == 1
    print(f"\ncrash {point}: champion v{champion_after} after the crash, audit settled, rollback to "
          f"v{reg.version_for_alias(NAME, CHAMPION)}")


def test_a_failed_alias_move_is_recorded_as_abandoned_at_once(tmp_path):
    reg = _registry(tmp_path)

    def refuse(*args, **kwargs):
        raise RuntimeError("registry unavailable")

    reg.client.set_registered_model_alias = refuse
    with pytest.raises(Exception, match="registry unavailable"):
        reg.promote(NAME, 3)
    assert reg.pending_moves(NAME) == [] and reg.version_for_alias(NAME, CHAMPION) == "2"
    assert [m.to_version for m in reg.audit_log(NAME)] == ["1", "2"]
