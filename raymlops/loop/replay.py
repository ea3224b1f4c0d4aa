"""Replaying labelled rows through a running service: predictions over HTTP, then their true outcomes.

This is how a stream is simulated honestly (the flights replay, the loop tests): each chunk of rows is
scored by whatever version the service picks (champion or canary challenger), and the labels are then
reported through ``/v1/feedback`` exactly as a user would once outcomes are known. Requests are sent from
a few threads, so the service batches them as it would under real traffic.

Example::

    with Client(url, api_key=key) as client:
        answers = replay_labelled(client, april, schema, target="delayed")
    answers.groupby("version").size()
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from raymlops.serving.client import Client


def records_of(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """JSON-ready records of ``columns`` (timestamps as ISO text, missing values as null)."""
    return json.loads(frame[columns].to_json(orient="records", date_format="iso"))


def replay_labelled(client: Client, frame: pd.DataFrame, schema: dict[str, Any], target: str, *,
                    rows_per_request: int = 64, threads: int = 4, feedback: bool = True) -> pd.DataFrame:
    """Score every row of ``frame`` through the service, then report its label; one answer row per input
    row, in order: ``score``, ``version``, ``alias``, ``request_id``, ``index`` and the label;
    ``attrs["unknown_labels"]`` counts labels the monitor could not join."""
    records = records_of(frame, list(schema))
    labels = frame[target].astype(float).tolist()
    chunks = [(i, records[i:i + rows_per_request]) for i in range(0, len(records), rows_per_request)]

    local = threading.local()
    clones: list[Client] = []

    def score(chunk: tuple[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        if not hasattr(local, "client"):
            local.client = client.clone()
            clones.append(local.client)
        start, rows = chunk
        answer = local.client.predict(rows)
        return [{"row": start + j, "score": p["score"], "version": answer["version"], "alias": answer["alias"],
                 "request_id": answer["request_id"], "index": j} for j, p in enumerate(answer["predictions"])]

    try:
        with ThreadPoolExecutor(threads) as pool:
            answers = [row for rows in pool.map(score, chunks) for row in rows]
    finally:
        for c in clones:
            c.close()
    out = pd.DataFrame(answers).sort_values("row").reset_index(drop=True)
    out[target] = labels
    out.attrs["unknown_labels"] = 0
    if feedback:
        items = [(r.request_id, int(r.index), float(label)) for r, label in zip(out.itertuples(), labels, strict=True)]
        for i in range(0, len(items), 5000):
            # Labels of predictions the monitor never saw (it was restarting) come back as unknown.
            out.attrs["unknown_labels"] += len(client.feedback(items[i:i + 5000])["unknown"])
    return out


def wait_for_aliases(client: Client, champion: str | None, challenger: str | None, *, timeout_s: float = 60.0,
                     probes: int = 8) -> dict[str, Any]:
    """Wait until the service answers with the versions the registry aliases name (replicas poll the
    registry every ``serving.watch_interval_s``); ``probes`` reads of ``/v1/model`` in a row must agree,
    so every replica has switched. Raises ``TimeoutError`` naming what was served instead."""
    wanted = {"champion": champion, "challenger": challenger if challenger != champion else None}
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        infos = [client.model_info() for _ in range(probes)]
        seen = {a: sorted({(i.get(a) or {}).get("version") or "-" for i in infos}) for a in wanted}
        if all(seen[a] == [v or "-"] for a, v in wanted.items()):
            return infos[-1]
        time.sleep(0.5)
    raise TimeoutError(f"the service still serves {seen} instead of {wanted} after {timeout_s:g} s")


__all__ = ["records_of", "replay_labelled", "wait_for_aliases"]
