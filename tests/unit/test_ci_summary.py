"""The pull request summary of `raymlops ci check` (pure)."""

from __future__ import annotations

from raymlops.ops.ci import summary_markdown

REPORT = {"metrics": {"auc": 0.71, "log_loss": 0.52, "accuracy": 0.8}, "slices": {},
          "champion": {"version": "3", "metrics": {"auc": 0.70, "log_loss": 0.50, "accuracy": 0.8}},
          "gates": [{"gate": "auc >= 0.60", "passed": True, "detail": "auc = 0.7100 meets >= 0.6"},
                    {"gate": "log_loss <= champion + 0.01", "passed": False,
                     "detail": "log_loss = 0.5200 fails <= champion 0.5000 + 0.01 = 0.5100"}]}


def test_a_failing_candidate_is_shown_against_the_champion_gate_by_gate():
    md = summary_markdown("flights-delay", REPORT, task="classification", run_name="pr-7", data_version="abc123",
                          version=None, promoted=False)
    assert md.startswith("## raymlops: `flights-delay` candidate FAILS its gates")
    assert "| auc | 0.7100 | 0.7000 | +0.0100 (better) |" in md
    assert "| log_loss | 0.5200 | 0.5000 | +0.0200 (worse) |" in md  # lower is better for a loss
    assert "| accuracy | 0.8000 | 0.8000 | +0.0000 (same) |" in md
    assert "| `log_loss <= champion + 0.01` | **FAIL** |" in md and "Nothing was registered." in md
    assert "champion v3" in md and "`abc123`" in md


def test_a_first_candidate_has_no_champion_column_values_and_says_where_it_went():
    report = {**REPORT, "champion": {"version": None, "metrics": None}, "gates": REPORT["gates"][:1]}
    md = summary_markdown("m", report, task="classification", run_name="main-1", data_version=None,
                          version="1", promoted=True)
    assert "passes its gates" in md and "| auc | 0.7100 | - | - |" in md
    assert "Registered as version 1 and promoted to `champion`." in md
