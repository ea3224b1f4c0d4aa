"""State that must survive a crash (issue 18, item 6): whole files replaced durably, append-only logs whose
torn last line neither glues itself to the next record nor stops the readers (audit, decisions)."""

from __future__ import annotations

import json
import os
import stat

from raymlops.registry.store import AliasMove, Registry
from raymlops.workspace import append_lines, read_json_lines, write_json_atomic, write_text_atomic


def test_an_atomic_write_replaces_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state" / "s.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]


def test_a_secret_is_written_private(tmp_path):
    path = write_text_atomic(tmp_path / "token", "s3cret", mode=0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == "s3cret"


def test_a_line_appended_after_a_torn_one_starts_on_its_own_line(tmp_path):
    log = tmp_path / "decisions.jsonl"
    append_lines(log, [json.dumps({"n": 1})])
    with open(log, "a") as f:  # a crash half-way through a write
        f.write('{"n": 2, "cut')
    append_lines(log, [json.dumps({"n": 3}), json.dumps({"n": 4})])
    values, skipped = read_json_lines(log)
    assert values == [{"n": 1}, {"n": 3}, {"n": 4}]
    assert skipped == 1


def test_read_json_lines_of_a_missing_or_empty_log(tmp_path):
    assert read_json_lines(tmp_path / "none.jsonl") == ([], 0)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert read_json_lines(tmp_path / "empty.jsonl") == ([], 0)


def _move(t: float, state: str, to: str) -> AliasMove:
    return AliasMove(time=t, model="m", alias="champion", from_version=None, to_version=to, action="promote",
                     reason="test", actor="me", state=state)


def test_a_torn_audit_line_does_not_stop_the_history_or_the_pending_moves(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)  # the audit log needs no store
    registry._append_audit(_move(1.0, "intent", "1"))
    registry._append_audit(_move(1.0, "done", "1"))
    with open(registry.audit_path, "a") as f:
        f.write('{"time": 2.0, "model": "m", "alias": "cham')  # the process died mid-line
    registry._append_audit(_move(3.0, "intent", "2"))  # a later move, after a restart
    with open(registry.audit_path, "a") as f:
        f.write('{"unexpected": "record"}\n')  # whole JSON, but not a move: skipped too
    assert [m.to_version for m in registry.audit_log("m")] == ["1"]
    assert [m.to_version for m in registry.pending_moves("m")] == ["2"]


def test_a_torn_feedback_line_does_not_stop_the_retraining_window():
    from raymlops.loop.retraining import labelled_traffic

    good = json.dumps({"request_id": "r1", "index": 0, "record": {"x": 1.5}, "label": 1, "predicted_at": 10.0})
    later = json.dumps({"request_id": "r2", "index": 0, "record": {"x": 2.5}, "label": 0, "predicted_at": 11.0})
    frame = labelled_traffic([good, '{"request_id": "r9", "rec', later], {"x": {"type": "float"}}, "y",
                             "classification")
    assert frame["x"].tolist() == [1.5, 2.5]
    assert frame["y"].tolist() == [1, 0]
