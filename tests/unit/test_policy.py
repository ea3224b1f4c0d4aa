"""The retraining / canary / rollback policy: every decision with its reasons and what blocked it."""

from __future__ import annotations

import pytest

from raymlops.config import MonitoringConfig, RetrainingConfig
from raymlops.errors import ConfigError
from raymlops.loop.policy import DAY_S, Evidence, canary_decision, retrain_decision, rollback_decision
from tests.helpers import smoke_config

MON = MonitoringConfig(min_window_rows=500)
CFG = RetrainingConfig(enabled=True, min_drifted_features=2, quality_floor="auc >= 0.6", cooldown_s=3600,
                       max_per_day=2, canary_min_samples=100)
NOW = 10 * DAY_S


def test_enough_drift_triggers_a_retrain_with_its_reason():
    d = retrain_decision(CFG, MON, [], Evidence(NOW, rows=2000, drifted=["temp", "visib"]))
    assert d.action == "retrain" and d.reasons == ["2 features drifted (temp, visib) >= 2"] and d.taken


def test_one_drifted_feature_or_a_small_window_holds():
    assert retrain_decision(CFG, MON, [], Evidence(NOW, rows=2000, drifted=["temp"])).action == "hold"
    small = retrain_decision(CFG, MON, [], Evidence(NOW, rows=100, drifted=["temp", "visib", "hour"]))
    assert small.action == "hold" and small.blocked_by == ["window has 100 rows < 500"]


def test_prediction_drift_and_live_quality_below_the_floor_trigger():
    assert retrain_decision(CFG, MON, [], Evidence(NOW, rows=800, prediction_drift=True)).reasons == [
        "the score distribution drifted"]
    d = retrain_decision(CFG, MON, [], Evidence(NOW, rows=800, live={"auc": 0.55}, labelled=800))
    assert d.action == "retrain" and "auc = 0.5500 fails >= 0.6" in d.reasons[0]
    ok = retrain_decision(CFG, MON, [], Evidence(NOW, rows=800, live={"auc": 0.65}, labelled=800))
    assert ok.action == "hold" and ok.reasons == []


def test_cooldown_and_daily_cap_block_but_keep_the_reasons():
    ev = Evidence(NOW, rows=2000, drifted=["a", "b"])
    cooled = retrain_decision(CFG, MON, [NOW - 600], ev)
    assert cooled.action == "hold" and cooled.reasons and "cool-down" in cooled.blocked_by[0]
    capped = retrain_decision(CFG, MON, [NOW - 20_000, NOW - 10_000], ev)
    assert capped.action == "hold" and capped.blocked_by == ["cap: 2 retrains in the last 24 h >= 2"]
    assert retrain_decision(CFG, MON, [NOW - DAY_S - 1, NOW - 10_000], ev).action == "retrain"


def test_schedule_triggers_after_its_interval():
    cfg = CFG.model_copy(update={"every_s": 7 * DAY_S})
    assert retrain_decision(cfg, MON, [NOW - 8 * DAY_S], Evidence(NOW)).reasons == ["scheduled every 604800 s"]
    assert retrain_decision(cfg, MON, [NOW - 2 * DAY_S], Evidence(NOW)).action == "hold"


def test_canary_waits_for_samples_then_promotes_or_discards():
    assert canary_decision(CFG, {"auc": 0.7}, {"auc": 0.9}, 50, NOW).action == "wait"
    better = canary_decision(CFG, {"auc": 0.70}, {"auc": 0.72}, 150, NOW)
    assert better.action == "promote" and "meets" in better.reasons[0]
    worse = canary_decision(CFG, {"auc": 0.70}, {"auc": 0.52}, 150, NOW)
    assert worse.action == "discard" and "auc = 0.5200 fails >= champion 0.7000" in worse.reasons[0]


def test_a_new_champion_that_loses_quality_is_rolled_back():
    assert rollback_decision(CFG, {"auc": 0.60}, {"auc": 0.70}, 50, 100, NOW).action == "wait"
    assert rollback_decision(CFG, {"auc": 0.695}, {"auc": 0.70}, 500, 100, NOW).action == "keep"
    d = rollback_decision(CFG, {"auc": 0.60}, {"auc": 0.70}, 500, 100, NOW)
    assert d.action == "rollback" and "fails" in d.reasons[0]


def test_a_rollback_without_a_baseline_waits_and_says_which_is_missing():
    d = rollback_decision(CFG, {"auc": 0.60}, None, 500, 100, NOW)
    assert d.action == "wait" and d.blocked_by == ["no live quality of the champion it replaced"]
    few = rollback_decision(CFG, None, None, 5, 100, NOW)
    assert few.blocked_by == ["5 labelled answers < 100", "no live quality of the champion it replaced"]


def test_unreadable_policy_gates_are_config_errors(tmp_path):
    from raymlops.config import load_config

    with pytest.raises(ConfigError, match="retraining.promote_gate"):
        load_config(smoke_config(tmp_path, retraining={"promote_gate": "auc better than champion"}))


def test_with_labels_drift_is_context_and_lost_quality_is_the_trigger():
    """Issue 14: seasons move the weather every month; once the champion has labelled answers, drift
    alone does not retrain (it is recorded), a quality drop does; drift_trigger 'always' restores it."""
    drifted = Evidence(NOW, rows=2000, drifted=["temp", "visib"], live={"auc": 0.7}, labelled=800)
    held = retrain_decision(CFG, MON, [], drifted)
    assert held.action == "hold" and held.reasons == []
    assert "2 features drifted (temp, visib)" in held.evidence["drift_noted"]
    assert "not a trigger while the champion has 800 labelled answers" in held.evidence["drift_noted"]
    few_labels = Evidence(NOW, rows=2000, drifted=["temp", "visib"], live={"auc": 0.7}, labelled=100)
    assert retrain_decision(CFG, MON, [], few_labels).action == "retrain"
    always = CFG.model_copy(update={"drift_trigger": "always"})
    assert retrain_decision(always, MON, [], drifted).action == "retrain"
    dropped = Evidence(NOW, rows=2000, live={"auc": 0.7}, labelled=800, quality_drop="live auc 0.61 is below ...")
    d = retrain_decision(CFG, MON, [], dropped)
    assert d.action == "retrain" and d.reasons == ["live auc 0.61 is below ..."]


def test_an_earlier_champion_is_reused_only_when_it_beats_the_champion_outside_the_noise():
    """Of the earlier champions, the one whose paired interval clears the promote gate with the largest
    gain is canaried again; one inside the noise, one with too few answers, or statistics off: none."""
    import numpy as np

    from raymlops.loop.policy import best_earlier_champion
    from raymlops.training.comparison import compare

    rng = np.random.default_rng(4)
    y = (rng.random(3000) < 0.3).astype(float)
    champion = rng.random(3000)
    clearly_better = y * 0.5 + rng.random(3000)   # AUC ~0.75 against ~0.5
    slightly_better = y * 0.3 + rng.random(3000)  # AUC ~0.65
    noise = rng.random(3000)                      # the same as the champion, by construction

    def judged(scores, n=3000):
        c = compare("auc", y[:n], champion[:n], scores[:n], min_samples=300, seed=0)
        return ({"auc": c.champion}, {"auc": c.challenger}, n, c)

    gate = RetrainingConfig().promote_gate
    chosen, said = best_earlier_champion(gate, 300, {"3": judged(slightly_better), "2": judged(clearly_better),
                                                     "1": judged(noise)})
    assert chosen == "2" and len(said) == 3 and "(meets)" in said[0] and "(meets)" in said[1]
    assert best_earlier_champion(gate, 300, {"1": judged(noise)})[0] is None
    assert best_earlier_champion(gate, 300, {"2": judged(clearly_better, n=100)})[0] is None  # too few answers
    off = judged(clearly_better)
    assert best_earlier_champion(gate, 300, {"2": (off[0], off[1], off[2], None)})[0] is None  # unpaired: never
