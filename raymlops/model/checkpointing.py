"""Where a training loop's checkpoints go, on Ray Train workers and in the driver (local mode).

On workers, rank 0 writes a checkpoint into a temporary folder and ``ray.train.report`` has Ray Train
persist it under the run's storage folder; a resumed run gets it back from ``ray.train.get_checkpoint``.
In local mode (``num_workers: 0``) Ray Train keeps only a reference to the reported folder and a new
process starts with none, so the loop writes each checkpoint itself, atomically, to
``<run folder>/checkpoint_<step>`` (the two newest are kept) and resumes from the newest complete one:
a rerun with the same name continues where a killed driver stopped, as with workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPLETE = ".complete"
KEEP = 2
BEST_WEIGHTS = "best_model.safetensors"  # in an MLP checkpoint: the best epoch's weights


def _local_checkpoints(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("checkpoint_*") if (p / COMPLETE).is_file())


def newest_local_checkpoint(local_dir: str | Path) -> Path | None:
    """The newest complete checkpoint a local-mode run wrote, if any."""
    found = _local_checkpoints(Path(local_dir))
    return found[-1] if found else None


def resume_checkpoint(local_dir: str | None) -> Any:
    """The checkpoint to resume from: Ray Train's, or in local mode (``local_dir``, the worker config's
    ``local_checkpoint_dir``) the newest complete one on disk."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint or not local_dir:
        return checkpoint
    found = _local_checkpoints(Path(local_dir))
    return ray.train.Checkpoint.from_directory(str(found[-1])) if found else None


def report(local_dir: str | None, step: int, metrics: dict[str, Any], write: Callable[[Path], None]) -> None:
    """Report ``metrics`` with a checkpoint that ``write`` fills (rank 0 writes; every rank reports); in
    local mode (``local_dir``) the checkpoint is written there."""
    import ray.train

    if local_dir:
        folder = Path(local_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=folder))
        try:
            write(tmp)
            (tmp / COMPLETE).write_text("")
            for f in tmp.iterdir():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
            final = folder / f"checkpoint_{step:06d}"
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in _local_checkpoints(folder)[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(final)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            write(Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
