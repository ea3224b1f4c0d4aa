"""One table of every benchmark's ours / baseline figures: ``benchmarks/out/summary.json`` and ``summary.md``.

Reads every ``benchmarks/out/*.json`` a benchmark script wrote through ``harness.write_results`` (other
files there are skipped, with a note) and lists each comparison with its baseline's name and its ratio,
whose convention is ``harness.Comparison``'s: above 1, ours is better. ``make bench`` runs it last.

    .venv/bin/python benchmarks/summary.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness import OUT_DIR, REPO, fmt

SUMMARY = "summary"


def gather(out_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every comparison of every results file (in file order), and each benchmark's meta data."""
    rows: list[dict[str, Any]] = []
    benches: dict[str, Any] = {}
    for path in sorted(out_dir.glob("*.json")):
        if path.stem == SUMMARY:
            continue
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"skipped {path.name}: {exc}")
            continue
        if not isinstance(payload, dict) or "comparisons" not in payload:
            print(f"skipped {path.name}: not written by benchmarks/harness.py (an older script's output?)")
            continue
        benches[payload["bench"]] = {"file": path.name, **payload["meta"]}
        rows.extend(payload["comparisons"])
    return rows, benches


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | case | ours | baseline name | baseline | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3g}x"
        if r.get("extra", {}).get("disturbed"):
            ratio += " (not quiet)"
        cells = [r["bench"], r["case"], fmt(r["ours"], r["unit"]), r["baseline_name"], fmt(r["baseline"], r["unit"]),
                 ratio]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    note = ("ratio: how many times better ours is, measured in the same run: ours / baseline where higher is "
            "better (rows/s, req/s, AUC), baseline / ours where lower is better (times, memory). "
            "\"not quiet\": other processes used more than 5% of the CPUs while it was measured.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def main() -> None:
    from raymlops.workspace import write_json_atomic, write_text_atomic

    rows, benches = gather(OUT_DIR)
    write_json_atomic(OUT_DIR / f"{SUMMARY}.json",
                      {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benchmarks": benches, "comparisons": rows})
    table = markdown(rows)
    write_text_atomic(OUT_DIR / f"{SUMMARY}.md", table)
    print(table)
    print(f"wrote {(OUT_DIR / SUMMARY).relative_to(REPO)}.json and .md ({len(rows)} comparisons from "
          f"{len(benches)} benchmarks)")


if __name__ == "__main__":
    main()
