"""``retraining``: the closed loop's triggers, window, canary and rollback."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from raymlops.config.base import StrictModel


class RetrainingConfig(StrictModel):
    enabled: bool = Field(False, description="Retrain when the policy says so.")
    min_drifted_features: int = Field(2, ge=1, description="Retrain when at least this many features drift.")
    on_prediction_drift: bool = Field(True, description="Retrain when the score distribution drifts.")
    drift_trigger: Literal["without_labels", "always"] = Field(
        "without_labels", description="When input or score drift alone triggers a retrain: 'without_labels' "
        "(only while the champion has too few labelled answers to judge its quality: with labels, lost quality "
        "is the trigger and drift is recorded as context) or 'always'.")
    quality_drop: float | None = Field(
        0.02, ge=0, description="Retrain when the champion's live quality (the promote gate's metric, over its "
        "labelled answers) is below its own test quality by more than this, for the whole interval "
        "(evaluation.comparison's alpha); None: off.")
    quality_floor: str | None = Field(
        None, description="Retrain when live quality breaks this, e.g. 'auc >= 0.62' (over labelled traffic).")
    every_s: float | None = Field(None, gt=0, description="Also retrain on this schedule (seconds).")
    cooldown_s: float = Field(3600, ge=0, description="Least time between two retrains.")
    max_per_day: int = Field(4, ge=1, description="Most retrains in any 24 hours.")
    canary_share: float = Field(0.2, gt=0, le=1, description="Traffic share of a new challenger while the loop runs (serving.canary_share wins when set above 0).")
    canary_min_samples: int = Field(300, ge=10, description="Labelled challenger answers before it is judged.")
    promote_gate: str = Field(
        "auc >= champion - 0.0", description="Live quality a challenger needs against the champion to be promoted.")
    rollback_gate: str = Field(
        "auc >= champion - 0.01",
        description="Live quality a new champion must keep against the one it replaced, or it is rolled back.")
    rollback_min_samples: int = Field(
        300, ge=10, description="Labelled answers of a new champion before it can be rolled back.")
    max_wait_s: float = Field(
        3 * 86_400, ge=0, description="Longest a canary or a new champion on watch waits while the difference is "
        "inside the noise (evaluation.comparison); then the champion of the time stays: the canary is discarded, "
        "the new champion kept.")
    after_wait: Literal["champion", "challenger"] = Field(
        "champion", description="Who serves when a canary's interval still straddles promote_gate after "
        "max_wait_s: 'champion' (nothing changes without evidence) or 'challenger' (it passed the offline gates "
        "and is not shown worse live; choose it where newer data is known to help, as in seasonal data).")
    window_days: float | None = Field(
        90, gt=0, description="A retrain learns from the latest this many days (of data.split's time column) of "
        "the champion's training data and labelled traffic; None: all of it.")
    candidate_windows: list[Annotated[float, Field(gt=0)] | None] = Field(
        default_factory=list, description="More windows (days; null: all history) a retrain fits a candidate on "
        "besides window_days, each on its own rows: the one with the lowest validation loss (the same "
        "validation days for every window, which none of them trains on) goes to the gates, so a retrain "
        "chooses between remembering and forgetting by measurement. Each window costs one more fit. []: off.")
    half_life_days: float | None = Field(
        None, gt=0, description="Recency-weighted history: each training row of the window counts "
        "0.5 ** (age / half_life_days) in the loss, its age in days before the window's newest row, so old "
        "seasons still teach but the newest weeks teach most (validation and test rows count alike). Needs a "
        "time split. None: every row counts the same. A retrain ignores features.weight_column (live traffic "
        "does not carry it).")
    validation_days: float = Field(7, gt=0, description="Days before the test days: early stopping.")
    test_days: float = Field(
        14, gt=0, description="The newest days of the window: the gates compare candidate and champion on them.")
    include_history: bool = Field(True, description="Use the champion's training rows inside the window too.")
    min_rows: int = Field(1000, ge=1, description="Fewest rows in the window for a retrain to start.")
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] | None = Field(
        None, description="Ray Train workers of a retrain (default: training's; 0 trains in the loop's process).")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="CPUs per retrain worker (default: training's); it shares the cluster with serving.")
    epochs: int | None = Field(None, ge=1, description="Most epochs of a retrain (default: training's).")
    refit: bool = Field(
        False, description="A candidate that passes the gates is trained once more on its whole window, its "
        "validation and test days included, and that model is the challenger (training.refit): the newest "
        "days are the most telling, and without a refit the candidate never learns from them. Its canary "
        "judges it on live traffic.")
    earlier_champions: int = Field(
        0, ge=0, description="Before a retrain fits anything, score this many of the most recent earlier "
        "champions (versions that once held the champion alias) against the champion on the labelled answers "
        "of its current tenure: one that passes promote_gate there, paired and outside the noise, becomes the "
        "challenger instead of a new fit (seasons return), and its canary judges it on fresh traffic (one whose "
        "canary was discarded is not proposed again while the same champion serves). 0: off.")
    tune: bool = Field(False, description="Search hyperparameters on each retrain (tuning section).")
    check_every_s: float = Field(
        60, gt=0, description="How often `raymlops serve` (or `raymlops loop`) runs one step of the loop.")

    @model_validator(mode="after")
    def _one_search_at_a_time(self) -> RetrainingConfig:
        if self.tune and self.candidate_windows:
            raise ValueError("retraining.tune and retraining.candidate_windows each choose among several fits; "
                             "turn one of them off (tuning every window would multiply the retrain's cost)")
        return self
