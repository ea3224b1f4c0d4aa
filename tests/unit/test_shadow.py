"""Finding the labelled traffic since a time in feedback.jsonl (bisected on received_at, then filtered
on predicted_at), and one model's metric interval: the pieces of the loop's paired verdicts."""

from __future__ import annotations

import json
import random

import numpy as np

from raymlops.monitoring.shadow import feedback_since, first_offset
from raymlops.training.comparison import interval


def _journal(path, n: int, seed: int = 0) -> list[dict]:
    rnd, t, items = random.Random(seed), 0.0, []
    for i in range(n):
        t += rnd.random()
        items.append({"request_id": str(i), "index": 0, "label": 1.0, "received_at": t,
                      "predicted_at": t - rnd.random() * 5, "pad": "x" * rnd.randint(1, 300)})
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return items


def test_first_offset_is_the_first_line_received_at_or_after_the_time(tmp_path):
    path = tmp_path / "feedback.jsonl"
    items = _journal(path, 5000)
    starts = [0]
    for item in items:
        starts.append(starts[-1] + len(json.dumps(item)) + 1)
    times = [item["received_at"] for item in items]
    rnd = random.Random(1)
    for since in [-1.0, times[0], times[1], times[2500], times[-1], times[-1] + 1,
                  *(rnd.uniform(0, times[-1]) for _ in range(100))]:
        want = next((starts[i] for i, t in enumerate(times) if t >= since), starts[-1])
        assert first_offset(path, since) == want, since


def test_feedback_since_keeps_predictions_made_since_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "feedback.jsonl"
    items = _journal(path, 3000)
    with open(path, "a") as f:
        f.write('{"request_id": "torn", "recei')  # a crash mid-write
    since = items[1500]["received_at"]
    got = [json.loads(line)["request_id"] for line in feedback_since(path, since)]
    want = [item["request_id"] for item in items if item["predicted_at"] >= since]
    assert got == want and len(got) > 1000
    assert feedback_since(tmp_path / "absent.jsonl", 0.0) == []


def test_a_metric_interval_covers_the_true_auc_at_about_its_rate():
    rng = np.random.default_rng(0)
    covered = 0
    for seed in range(100):
        r = np.random.default_rng(seed)
        y = r.integers(0, 2, 800)
        s = y * 0.8 + r.normal(size=800)  # true AUC = Phi(0.8 / sqrt(2)) ~ 0.714
        value, low, high = interval("auc", y, s, alpha=0.1, resamples=300, seed=seed)
        covered += low <= 0.7142 <= high
        assert low <= value <= high
    assert 80 <= covered <= 98, covered
    assert np.isnan(interval("auc", rng.integers(0, 2, 1), rng.normal(size=1))[1])
