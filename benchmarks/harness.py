"""What every benchmark shares: a quiet machine, CPU and memory accounting, percentiles, the results file.

Each script measures ours against a named baseline in the same run and records every headline figure as
a ``Comparison``; ``write_results`` puts them in ``benchmarks/out/<script>.json`` and
``benchmarks/summary.py`` gathers all of them into one table. The machine is shared (2 cores here), so a
timing is only worth reporting when other processes left the CPUs alone: scripts wait for quiet before
they measure (``wait_for_quiet``) and record how much CPU other processes used meanwhile (``CpuWatch``).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "benchmarks" / "out"
MIB = 1024 * 1024
NOISY_SHARE = 0.05  # other processes used more than 5% of the CPUs while we measured: the figure is flagged

if str(REPO) not in sys.path:  # `python benchmarks/x.py` imports this checkout's raymlops, not an installed one
    sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Comparison:
    """One figure of ours against a named baseline, both measured in the same run.

    ``ratio`` says how many times better ours is, whatever the unit: ours / baseline where higher is
    better (rows/s, requests/s, AUC), baseline / ours where lower is better (seconds, ms, MiB); for a time
    that is ours' speed over the baseline's speed. Above 1 ours is better, below 1 the baseline is.
    """

    bench: str
    case: str
    ours: float
    baseline: float
    baseline_name: str
    unit: str
    higher_is_better: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        num, den = (self.ours, self.baseline) if self.higher_is_better else (self.baseline, self.ours)
        if not den or math.isnan(num) or math.isnan(den):
            return None
        return num / den

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def fmt(value: float | None, unit: str = "") -> str:
    """A figure for a table: thousands separators for large values, 3 significant digits for small ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def print_comparisons(comparisons: list[Comparison]) -> None:
    print("\nours vs baseline, measured in the same run (ratio > 1: ours is better)")
    for c in comparisons:
        flag = "  (NOT a quiet machine)" if c.extra.get("disturbed") else ""
        ratio = "n/a" if c.ratio is None else f"{c.ratio:.3g}x"
        print(f"  {c.case}\n      ours {fmt(c.ours, c.unit)}, {c.baseline_name} {fmt(c.baseline, c.unit)}: "
              f"ratio {ratio}{flag}")


def write_results(script: str, comparisons: list[Comparison], details: dict[str, Any],
                  args: Any = None, name: str | None = None) -> Path:
    """``benchmarks/out/<name>.json`` (name: the script's, by default), written to a temp file then renamed."""
    from raymlops.workspace import write_json_atomic

    name = name or Path(script).stem
    payload = {"bench": name, "meta": run_meta(args), "comparisons": [c.to_dict() for c in comparisons],
               "details": details}
    path = write_json_atomic(OUT_DIR / f"{name}.json", payload)
    print(f"\nwrote {path.relative_to(REPO)}")
    return path


def run_meta(args: Any = None) -> dict[str, Any]:
    """The machine, the software and the checkout a result came from."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
            "git": {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "raymlops").splitlines()},
            "args": vars(args) if args is not None else None}


def bench_config(name: str, workdir: str | Path, edit: Callable[[dict[str, Any]], None] | None = None):
    """``configs/<name>.yaml`` as a benchmark uses it: its workdir in a temp folder, ``edit`` applied to its data."""
    import yaml

    from raymlops.config import parse_config

    path = REPO / "configs" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    data["workdir"] = str(workdir)
    if edit is not None:
        edit(data)
    return parse_config(data, source=f"{path.name} (benchmark copy)", base_dir=str(path.parent))


# ------------------------------------------------------------------------------------- timing
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the values, never an interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarize(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values, default=float("nan")), "median": percentile(values, 50),
            "p90": percentile(values, 90), "max": max(values, default=float("nan"))}


def repeat(fn: Callable[[], Any], times: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``times`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


@dataclass(frozen=True)
class Usage:
    """Wall seconds and CPU seconds (user + system) of this process and of the children it reaped."""

    wall_s: float
    cpu_s: float


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(fn: Callable[[], Any]) -> tuple[Any, Usage]:
    """Call ``fn``; return its value and what the call cost in wall and CPU seconds."""
    c0, t0 = _cpu_s(), time.perf_counter()
    value = fn()
    return value, Usage(time.perf_counter() - t0, _cpu_s() - c0)


def run_process(cmd: list[str], **popen: Any) -> tuple[int, Usage]:
    """Run a child process to its end: exit code, wall and CPU seconds of it and every descendant it reaped."""
    return measure(lambda: subprocess.run(cmd, check=False, **popen).returncode)


# --------------------------------------------------------------------------------- the machine
def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    total = sum(fields[:8])  # guest time is already inside user and nice
    return total - fields[3] - fields[4], total  # minus idle and iowait


class CpuWatch:
    """CPU seconds used during a block by this process's tree, by group, and by every other process.

    Processes are read at both ends and every ``interval`` s in between; one that starts and ends between
    two reads is missed, which is why the machine-wide busy share (from /proc/stat) is kept too.
    ``group`` names a process of our tree (default: "ours"); everything else is "foreign".
    """

    def __init__(self, group: Callable[[psutil.Process], str] | None = None, interval: float = 1.0):
        self.group = group or (lambda _p: "ours")
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._groups: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-watch", daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        tree = {p.pid: p for p in me.children(recursive=True)} | {me.pid: me}
        for p in psutil.process_iter(["pid", "cpu_times", "create_time"]):
            times, pid = p.info["cpu_times"], p.info["pid"]
            if times is None:
                continue
            cpu = times.user + times.system
            if pid not in self._first:  # a process born during the block counts from zero
                self._first[pid] = 0.0 if (p.info["create_time"] or 0) >= self._wall0 - 0.5 else cpu
            self._last[pid] = cpu
            if pid in tree:
                try:  # a Ray worker renames itself when it becomes an actor: name it on every read
                    self._groups[pid] = self.group(tree[pid])
                except psutil.Error:
                    self._groups.setdefault(pid, "ours")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except psutil.Error:
                continue

    def __enter__(self) -> CpuWatch:
        self._wall0, self._t0, self._jiffies0 = time.time(), time.perf_counter(), _busy_jiffies()
        self._poll()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        self.wall_s = time.perf_counter() - self._t0
        busy, total = (b - a for a, b in zip(self._jiffies0, _busy_jiffies(), strict=True))
        self.machine_busy_share = busy / total if total else 0.0

    def result(self) -> dict[str, Any]:
        by_group: Counter[str] = Counter()
        foreign = 0.0
        for pid, last in self._last.items():
            used = max(0.0, last - self._first[pid])
            if pid in self._groups:
                by_group[self._groups[pid]] += used
            else:
                foreign += used
        share = foreign / ((os.cpu_count() or 1) * self.wall_s) if self.wall_s else 0.0
        return {"wall_s": self.wall_s, "own_cpu_s": sum(by_group.values()), "by_group_cpu_s": dict(by_group),
                "foreign_cpu_s": foreign, "foreign_share": share, "machine_busy_share": self.machine_busy_share,
                "disturbed": share > NOISY_SHARE}


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25) -> dict[str, float]:
    """Wait (at most ``max_wait_s``) until processes outside our tree use less than ``threshold`` of the CPUs."""
    t0 = time.perf_counter()
    said = False
    while True:
        with CpuWatch(interval=10.0) as watch:
            time.sleep(1.5)
        share = watch.result()["foreign_share"]
        if share < threshold or time.perf_counter() - t0 > max_wait_s:
            break
        if not said:
            print(f"  (other processes use {share:.0%} of the CPUs; waiting up to {max_wait_s:.0f} s ...)",
                  file=sys.stderr, flush=True)
            said = True
    if said:
        print(f"  ({'quiet' if share < threshold else 'still busy, going on'}: {share:.0%})", file=sys.stderr, flush=True)
    return {"foreign_share_before": share, "waited_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------- memory
class MemorySampler:
    """Peak RSS and PSS of this process (and, with ``tree``, of all its descendants summed), in a thread.

    RSS sums count a page shared by several processes once per process, so they overstate; PSS splits
    shared pages between the processes that map them and is the fairer "RAM used" of a process tree.
    PSS is costlier to read, so it is read on every 5th sample.
    """

    def __init__(self, tree: bool, interval: float = 0.2):
        self.tree, self.interval = tree, interval
        self.peak_rss = self.peak_pss = self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def sample(self, with_pss: bool = True) -> dict[str, int]:
        me = psutil.Process()
        rss = pss = procs = 0
        for p in [me, *(me.children(recursive=True) if self.tree else [])]:
            try:
                info = p.memory_full_info() if with_pss else p.memory_info()
            except (psutil.Error, OSError):
                continue
            rss, pss, procs = rss + info.rss, pss + getattr(info, "pss", 0), procs + 1
        self.peak_rss, self.max_procs = max(self.peak_rss, rss), max(self.max_procs, procs)
        if with_pss:
            self.peak_pss = max(self.peak_pss, pss)
        return {"rss": rss, "pss": pss, "processes": procs}

    def _loop(self) -> None:
        i = 0
        while not self._stop.wait(self.interval):
            self.sample(with_pss=i % 5 == 0)
            i += 1

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def result(self) -> dict[str, Any]:
        return {"peak_rss_mib": self.peak_rss / MIB, "peak_pss_mib": self.peak_pss / MIB,
                "max_processes": self.max_procs, "peak_rss_self_lifetime_mib": peak_rss_self_mib()}


def peak_rss_self_mib() -> float:
    """The kernel's high-water mark of this process's RSS over its whole life (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
