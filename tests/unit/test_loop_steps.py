"""The order of one loop step, without Ray: the watch first, then the canary, then the policy.

The verdicts themselves (paired comparisons on live traffic) are tested on real Ray, MLflow and HTTP in
tests/integration/test_loop*.py; here each verdict is scripted, so what is checked is only which steps a
tick takes after which outcome: a rollback or a waiting verdict ends the step, a discard ends it, and only
a promotion lets the same step go on to the retraining policy (which then retrains from the new champion).
"""

from __future__ import annotations

import pytest

from raymlops.config import load_config
from raymlops.loop.controller import LoopController
from raymlops.loop.policy import Decision
from raymlops.registry.store import CHALLENGER, CHAMPION
from tests.helpers import smoke_config


class Aliases:
    """The one registry call a step makes before its verdicts: which versions the aliases name."""

    def __init__(self, champion: str, challenger: str | None) -> None:
        self.names = {CHAMPION: champion, CHALLENGER: challenger}

    def version_for_alias(self, name: str, alias: str) -> str | None:
        return self.names[alias]


class Scripted(LoopController):
    """A controller whose verdicts are given: each judge returns the scripted action and logs its call."""

    def __init__(self, cfg, aliases: Aliases, watch: str | None = None, canary: str | None = None) -> None:
        super().__init__(cfg, registry=aliases, monitor=object())  # type: ignore[arg-type]
        self.aliases, self.script, self.calls = aliases, {"watch": watch, "canary": canary}, []
        self.state.last_scheduled_at = 0.0  # the schedule is due: the policy says retrain
        if watch:
            self.state.watch = {"version": aliases.names[CHAMPION], "previous": "0", "since": 0.0}
        self._save()  # a step reads the state from disk, as a restarted loop would

    def _judge_watch(self, champion, live, now):
        self.calls.append(("watch", champion))
        if self.script["watch"] != "wait":
            self.state.watch = None
        return self._record(Decision("rollback", self.script["watch"], [], [], {}, at=now))

    def _judge_canary(self, champion, challenger, live, now):
        self.calls.append(("canary", challenger))
        if self.script["canary"] == "promote":
            self.aliases.names.update({CHAMPION: challenger, CHALLENGER: None})
        return self._record(Decision("canary", self.script["canary"], [], [], {}, at=now))

    def _retrain(self, decision, champion, now):
        self.calls.append(("retrain", champion))
        return self._record(decision)


@pytest.fixture
def cfg(tmp_path):
    cfg = load_config(smoke_config(tmp_path, workdir=str(tmp_path / "work")))
    return cfg.model_copy(update={"retraining": cfg.retraining.model_copy(
        update={"enabled": True, "every_s": 600.0, "cooldown_s": 0.0})})


@pytest.mark.parametrize("watch, canary, calls", [
    # a canary promotion lets the step retrain at once, from the promoted version
    (None, "promote", [("canary", "2"), ("retrain", "2")]),
    (None, "wait", [("canary", "2")]),            # one candidate at a time
    (None, "discard", [("canary", "2")]),
    ("keep", "promote", [("watch", "1"), ("canary", "2"), ("retrain", "2")]),
    ("keep", "wait", [("watch", "1"), ("canary", "2")]),
    ("wait", "promote", [("watch", "1")]),        # probation not over: the canary waits with it
    ("rollback", "promote", [("watch", "1")]),    # the champion changed: the canary is judged next step
])
def test_a_step_judges_the_watch_then_the_canary_and_retrains_only_after_a_promotion(cfg, watch, canary, calls):
    controller = Scripted(cfg, Aliases("1", "2"), watch=watch, canary=canary)
    decisions = controller.tick(now=10_000.0, evidence={"quality": {}})
    assert controller.calls == calls
    assert [d["action"] for d in controller.decisions()] == [d.action for d in decisions]
    assert decisions[-1].action == ("retrain" if calls[-1][0] == "retrain" else canary if calls[-1][0] == "canary"
                                    else watch)


def test_without_a_challenger_a_kept_champion_retrains_in_the_same_step(cfg):
    controller = Scripted(cfg, Aliases("1", None), watch="keep")
    decisions = controller.tick(now=10_000.0, evidence={"quality": {}})
    assert controller.calls == [("watch", "1"), ("retrain", "1")]
    assert [(d.kind, d.action) for d in decisions] == [("rollback", "keep"), ("retrain", "retrain")]


def test_earlier_champions_are_judged_newest_first_on_the_tenure_and_a_lost_canary_is_not_retried(cfg):
    """Which versions a retrain scores as earlier champions, and from when (the champion's newest move to
    the alias): the scores themselves come from the paired comparison, tested on real Ray in test_loop.py."""
    from raymlops.registry.store import AliasMove

    def move(t, alias, old, new, action):
        return AliasMove(t, "m", alias, old, new, action, "", "test")

    log = [move(1.0, CHAMPION, None, "1", "register"), move(2.0, CHAMPION, "1", "2", "promote"),
           move(3.0, CHAMPION, "2", "3", "promote"), move(4.0, CHAMPION, "3", "4", "promote"),
           move(5.0, CHALLENGER, None, "3", "earlier champion"), move(6.0, CHALLENGER, "3", None, "discard")]

    class Log(Aliases):
        def audit_log(self, name):
            return log

    class Judged(LoopController):
        def __init__(self, cfg):
            super().__init__(cfg, registry=Log("4", None), monitor=object())  # type: ignore[arg-type]
            self.name, self.asked = "m", []

        def _paired(self, gate, champion, challenger, since, min_samples):
            self.asked.append((challenger, since))
            return None, None, None, 0  # statistics off: nothing qualifies

    controller = Judged(cfg.model_copy(update={"retraining": cfg.retraining.model_copy(
        update={"earlier_champions": 2})}))
    chosen, said = controller._earlier_champion("4")
    # v3 lost its canary in v4's tenure (since t = 4): v2 and v1 are the two newest that are left
    assert chosen is None and controller.asked == [("2", 4.0), ("1", 4.0)] and len(said) == 2
