"""A model builder whose forward pass can be made slow or hung from outside, for serving fault tests.

``build`` wraps the built-in MLP (so it trains and scores like the real model). While the rule file
exists, each forward pass over at least ``min_rows`` rows waits ``delay_s`` before scoring, and stops
waiting at once when the file is removed: ``{"delay_s": 3600, "min_rows": 3}`` hangs calls of three or
more rows until the test deletes the file, ``{"delay_s": 0.1, "min_rows": 1}`` gives every call a fixed
cost so a replica's capacity is known on any machine, and ``"per_row_s": 0.05`` adds a cost per row (a
batched call of 16 rows then takes 0.8 s: batching does not change the capacity). Serving processes import it by the config's
``model.builder: tests.slow_model:build`` (a trusted builder).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

from torch import nn

from raymlops.model.mlp import build_mlp

_HERE = str(Path(__file__).resolve())  # the same in the test process and in every replica
RULE = Path(tempfile.gettempdir()) / f"raymlops-slow-model-{hashlib.sha1(_HERE.encode()).hexdigest()[:8]}.json"


def set_rule(delay_s: float, min_rows: int = 1, per_row_s: float = 0.0) -> None:
    tmp = RULE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"delay_s": delay_s, "min_rows": min_rows, "per_row_s": per_row_s}))
    tmp.rename(RULE)


def clear_rule() -> None:
    RULE.unlink(missing_ok=True)


def _rule() -> dict | None:
    try:
        return json.loads(RULE.read_text())
    except (OSError, ValueError):
        return None


class SlowModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, numeric, categorical):
        rule = _rule()
        if rule and numeric.shape[0] >= rule["min_rows"]:
            until = time.monotonic() + rule["delay_s"] + rule.get("per_row_s", 0.0) * numeric.shape[0]
            while time.monotonic() < until and RULE.exists():
                time.sleep(min(0.01, max(0.0, until - time.monotonic())))
        return self.inner(numeric, categorical)


def build(spec, cfg):
    return SlowModel(build_mlp(spec, cfg))
