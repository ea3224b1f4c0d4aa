"""A retrain over several windows (``retraining.candidate_windows``): one fit per window, the best to the gates.

Each window runs the ordinary data stage and trainer on its own rows; every window ends at the same
newest row, so all candidates are scored on the same validation days, which none of them trained on.
The lowest validation loss (``loop.retraining.best_window``) is evaluated, gated and registered by the
training stage exactly like a single-window retrain (``fitted=``): nothing else is logged or registered,
and the losing fits leave only their checkpoints. The choice is recorded on the MLflow run (tags
``raymlops.window`` and ``raymlops.window_candidates``) and in the loop's decision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from raymlops.config import PipelineConfig
from raymlops.loop.retraining import WindowFit, best_window, window_label


def best_val_loss(final_metrics: dict[str, Any], history: list[dict[str, Any]]) -> float:
    """The validation loss of the model a fit kept (its best epoch or round)."""
    if "best_val_loss" in final_metrics:
        return float(final_metrics["best_val_loss"])
    losses = [float(h["val_loss"]) for h in history if "val_loss" in h]
    return min(losses) if losses else math.nan


def run_window_candidates(candidates: list[tuple[float | None, PipelineConfig]], run_name: str,
                          say: Callable[[str, str], None],
                          chosen_from: Callable[[list[WindowFit], WindowFit], None] = lambda fits, chosen: None,
                          ) -> Any:
    """Fit each (days, derived config) candidate, then gate and register the best; the training stage's result.

    ``chosen_from(fits, chosen)`` hears the choice before the gates judge it, so a caller records it even
    when the stage then raises (``GateFailed`` when the chosen candidate fails the gates)."""
    from raymlops.data.stage import run_data_stage
    from raymlops.training.stage import run_training_stage
    from raymlops.training.trainer import run_training

    fits: list[WindowFit] = []
    runs: dict[str, tuple[PipelineConfig, Any, Any]] = {}
    for days, cfg in candidates:
        label = window_label(days)
        data = run_data_stage(cfg)
        rows = int(data.split_rows.get("train", 0))
        say("retrain", f"window {label}: fitting a candidate on {rows} training rows")
        trained = run_training(cfg, data, f"{run_name}-{label}")
        fit = WindowFit(days=days, rows=rows, val_loss=best_val_loss(trained.final_metrics, trained.history),
                        seconds=round(trained.seconds, 2))
        fits.append(fit)
        runs[label] = (cfg, data, trained)
    chosen = best_window(fits)
    say("retrain", "windows by validation loss: " + ", ".join(
        f"{f.label} {f.val_loss:.5f}" for f in fits) + f"; {chosen.label} goes to the gates")
    cfg, data, trained = runs[chosen.label]
    tags = {"raymlops.window": chosen.label,
            "raymlops.window_candidates": json.dumps([{"window": f.label, "train_rows": f.rows,
                                                       "val_loss": f.val_loss, "seconds": f.seconds} for f in fits])}
    chosen_from(fits, chosen)
    return run_training_stage(cfg, data, run_name, fitted=trained, tags=tags)


__all__ = ["best_val_loss", "run_window_candidates"]
