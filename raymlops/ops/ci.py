"""CI/CD for models: ``raymlops ci check CONFIG`` is the one command a workflow calls.

It validates the data, trains, evaluates the candidate against the champion on the same test rows and
applies the gates, exactly as ``raymlops run`` does; it then writes a markdown summary for the pull
request (metrics next to the champion's, every gate with its verdict, the data version) and exits
non-zero when any gate fails. With ``--promote`` (on the main branch) a candidate that passed becomes
the champion through the registry, audited like any promotion. ``examples/ci/`` holds ready GitHub
Actions and GitLab CI workflows.

Example::

    result = ci_check(cfg, run_name="pr-42", promote=False)
    Path("ci-summary.md").write_text(result.summary)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raymlops.config import PipelineConfig
from raymlops.errors import GateFailed

TASK_METRICS = {"classification": ["auc", "pr_auc", "log_loss", "accuracy", "f1", "calibration_error"],
                "regression": ["rmse", "mae", "r2"], "multiclass": ["auc", "log_loss", "accuracy", "macro_f1"]}
LOWER_IS_BETTER = {"log_loss", "calibration_error", "rmse", "mae"}


@dataclass(frozen=True)
class CiResult:
    passed: bool
    summary: str
    version: str | None
    promoted: bool


def summary_markdown(name: str, report: dict[str, Any], *, task: str, run_name: str, data_version: str | None,
                     version: str | None, promoted: bool) -> str:
    """The pull request's view of a candidate (pure): verdict, metrics vs champion, gates, lineage."""
    gates = report.get("gates", [])
    passed = all(g["passed"] for g in gates)
    champion = report.get("champion") or {}
    champ_metrics = champion.get("metrics") or {}
    lines = [f"## raymlops: `{name}` candidate {'passes' if passed else 'FAILS'} its gates",
             "", f"Run `{run_name}`, data version `{data_version or '-'}`.", "",
             f"| metric | candidate | champion{' v' + str(champion['version']) if champion.get('version') else ''} | change |",
             "|---|---|---|---|"]
    for key in TASK_METRICS.get(task, []):
        if key not in report["metrics"]:
            continue
        ours, theirs = report["metrics"][key], champ_metrics.get(key)
        if theirs is None:
            lines.append(f"| {key} | {ours:.4f} | - | - |")
            continue
        delta = ours - theirs
        better = (delta < 0) if key in LOWER_IS_BETTER else (delta > 0)
        mark = "better" if better and abs(delta) > 1e-12 else ("same" if abs(delta) <= 1e-12 else "worse")
        lines.append(f"| {key} | {ours:.4f} | {theirs:.4f} | {delta:+.4f} ({mark}) |")
    lines += ["", "| gate | verdict | detail |", "|---|---|---|"]
    lines += [f"| `{g['gate']}` | {'pass' if g['passed'] else '**FAIL**'} | {g['detail']} |" for g in gates]
    lines.append("")
    if not passed:
        lines.append("Nothing was registered.")
    elif promoted:
        lines.append(f"Registered as version {version} and promoted to `champion`.")
    else:
        lines.append(f"Registered as version {version} (`challenger`); `--promote` on main makes it champion.")
    return "\n".join(lines) + "\n"


def ci_check(cfg: PipelineConfig, *, run_name: str, address: str | None = None, num_cpus: int | None = None,
             promote: bool = False, progress: Any = None) -> CiResult:
    """Run the pipeline as ``raymlops run`` does and judge it; never raises for a failed gate."""
    from raymlops.pipeline import run_pipeline
    from raymlops.registry.store import CHAMPION, Registry
    from raymlops.workspace import Workspace

    report_path = Workspace(cfg.workdir_path).root / "packages" / run_name / "evaluation.json"
    try:
        result = run_pipeline(cfg, address=address, num_cpus=num_cpus, run_name=run_name, progress=progress)
    except GateFailed as exc:
        report = json.loads(report_path.read_text())
        run_id = exc.details.get("run_id")
        tags = Registry.for_config(cfg).client.get_run(run_id).data.tags if run_id else {}
        return CiResult(False, summary_markdown(cfg.model_name, report, task=cfg.model.task, run_name=run_name,
                                                data_version=tags.get("raymlops.data_fingerprint"), version=None,
                                                promoted=False), None, False)
    training = result.training
    promoted = False
    if promote and training.version is not None:
        registry = Registry.for_config(cfg)
        if registry.version_for_alias(cfg.model_name, CHAMPION) != training.version:
            registry.promote(cfg.model_name, training.version, reason=f"ci check {run_name}: gates passed")
        promoted = True
    report = json.loads(report_path.read_text())
    summary = summary_markdown(cfg.model_name, report, task=cfg.model.task, run_name=run_name,
                               data_version=result.data.snapshot.snapshot_id, version=training.version,
                               promoted=promoted)
    return CiResult(True, summary, training.version, promoted)


__all__ = ["CiResult", "ci_check", "summary_markdown"]
