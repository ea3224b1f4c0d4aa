"""The monitoring actor: one per served model, fed by replicas, holding what the service answered.

Replicas buffer samples of their answers and hand them over in batches with fire-and-forget calls, so a
slow or dead monitor never slows or fails a request. Feedback is joined here by request id and appended
to ``<workdir>/monitoring/<model>/feedback.jsonl`` (one JSON object per line, flushed per call).

The actor is named and detached, so every replica (and a restarted one) finds the same monitor:
``get_monitor(model, workdir)``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import ray

from raymlops.monitoring.feedback import PredictionLog

NAMESPACE = "raymlops"


class Monitor:
    def __init__(self, model: str, workdir: str, capacity: int = 200_000) -> None:
        self.model = model
        self.log = PredictionLog(capacity)
        self.dir = Path(workdir) / "monitoring" / model
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_seen = 0
        self.feedback_joined = 0

    async def record(self, samples: list[dict[str, Any]]) -> None:
        self.samples_seen += len(samples)
        self.log.add(samples)

    async def feedback(self, items: list[dict[str, Any]], grace_s: float = 1.0) -> dict[str, Any]:
        """Join labels to predictions. Replicas hand samples over every 0.25 s, so ids not seen yet get
        ``grace_s`` to arrive (the actor is async: ``record`` calls run while this one waits)."""
        labelled, unknown = self.log.join(items)
        deadline = time.monotonic() + grace_s
        while unknown and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            done = {(row["request_id"], row["index"]) for row in labelled}
            items = [i for i in items if (i["request_id"], int(i.get("index", 0))) not in done]
            more, unknown = self.log.join(items)
            labelled += more
        if labelled:
            now = time.time()
            with open(self.dir / "feedback.jsonl", "a", encoding="utf-8") as f:
                f.writelines(json.dumps({**row, "received_at": now}) + "\n" for row in labelled)
        self.feedback_joined += len(labelled)
        return {"accepted": len(labelled), "unknown": unknown}

    async def stats(self) -> dict[str, Any]:
        return {"samples_seen": self.samples_seen, "kept": len(self.log), "feedback_joined": self.feedback_joined}


def monitor_name(model: str) -> str:
    return f"monitor:{model}"


def get_monitor(model: str, workdir: str) -> Any:
    """The model's monitor actor, created on first use (tiny: no CPU reserved, restarted if it dies)."""
    actor = ray.remote(Monitor).options(name=monitor_name(model), namespace=NAMESPACE, lifetime="detached",
                                        get_if_exists=True, num_cpus=0, max_restarts=-1)
    return actor.remote(model, workdir)
