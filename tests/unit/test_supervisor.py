"""How ``raymlops run`` tells a pipeline that died under Ray from one that ended on its own."""

from __future__ import annotations

import os
import subprocess
import sys

from raymlops.ops import supervisor


def test_a_killed_pipeline_process_is_described_with_its_signal_and_the_likely_cause():
    said = supervisor.ChildEnd(returncode=-9, clean=False).describe()
    assert "signal 9 (SIGKILL, out of memory?)" in said and "raylet or GCS" in said
    said = supervisor.ChildEnd(returncode=1, clean=False).describe()
    assert "exit status 1 and no error of its own" in said


def _child(tmp_path, body: str) -> supervisor.ChildEnd:
    """A stand-in pipeline process with the child's environment; ends as ``body`` makes it end."""
    marker = tmp_path / "exit"
    code = f"from raymlops.ops import supervisor\nsupervisor.become_child()\n{body}"
    env = {supervisor.CHILD_ENV: f"{os.getpid()}:{marker}", "PATH": ""}
    rc = subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode
    return supervisor.ChildEnd(rc, marker.is_file() and marker.read_text() == supervisor.CLEAN)


def test_only_a_pipeline_call_that_returned_or_raised_counts_as_clean(tmp_path):
    raised = _child(tmp_path, "try:\n    raise SystemExit(2)\nfinally:\n    supervisor.mark_clean()")
    assert raised.clean and raised.returncode == 2
    (tmp_path / "exit").unlink()
    died = _child(tmp_path, "import os\ntry:\n    os._exit(1)\nfinally:\n    supervisor.mark_clean()")
    assert not died.clean and died.returncode == 1  # what Ray does to a driver whose raylet died


def test_a_child_whose_parent_is_already_gone_stops_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv(supervisor.CHILD_ENV, f"999999999:{tmp_path / 'exit'}")
    code = "from raymlops.ops import supervisor\nsupervisor.become_child()\nprint('still here')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "still here" not in done.stdout
