"""Benchmark of the model families on the flagship task: test AUC and training wall time of each family
trained by raymlops, against a plain single-process LightGBM fitted on the same split in the same run.

What it measures
    The data stage of ``configs/flights.yaml`` runs once (January-March train/validation, April test) on
    a local Ray with 2 CPUs. Then, for each family (``mlp`` as configured in flights.yaml, ``lightgbm``
    and ``xgboost`` with their defaults), ``run_training`` trains on the config's Ray Train workers
    (2), and the best model scores the transformed test split. Training wall time is the whole
    ``run_training`` call (trainer start, workers, data hand-over, checkpoints). The baseline is
    ``lightgbm.train`` in this process, on the same transformed rows as numpy arrays (the same feature
    matrix and categorical columns, the same parameters as raymlops's LightGBM family, 2 threads, the
    same early stopping on the validation split): what a user would write by hand.

    Printed per family: test AUC, training seconds, and ours / plain ratios (AUC difference, time ratio).

How to run (from the repository root)::

    .venv/bin/python examples/flights/prepare.py --out examples/flights/data   # once
    .venv/bin/python benchmarks/family_bench.py [--families mlp,lightgbm,xgboost] [--workers auto]

Results are printed and written to benchmarks/out/family_bench.json (temp file, then renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "family_bench.json"  # family_bench-workers-<n>.json with --workers


def flights_config(family: str, workdir: Path, workers: str | None = None):
    from raymlops.config import parse_config

    data = yaml.safe_load((ROOT / "configs" / "flights.yaml").read_text())
    for src in data["data"]["sources"]:
        src["path"] = str((ROOT / "configs" / src["path"]).resolve())
    data["workdir"] = str(workdir)
    data["tuning"] = {"enabled": False}
    if workers is not None:
        data["training"]["num_workers"] = workers if workers == "auto" else int(workers)
    if family != data.get("model", {}).get("family", "mlp"):
        data["model"] = {"task": "classification", "family": family}
        if family == "mlp":
            data["model"].update(hidden_sizes=[64, 32], dropout=0.1, embedding_dim=8)
    return parse_config(data, source="flights.yaml", base_dir=str(ROOT / "configs"))


def arrays(ds, spec, target):
    from raymlops.model.contract import feature_matrix

    frame = ds.to_pandas()
    return feature_matrix(frame, spec), frame[target].to_numpy(np.float32)


def plain_lightgbm(cfg, spec, train, val, test) -> dict:
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    from raymlops.config import LightGBMModelConfig
    from raymlops.model.lgbm import lightgbm_params

    model = LightGBMModelConfig(family="lightgbm")
    params = lightgbm_params(spec, model.model_dump(), {"cpus_per_worker": 2, "seed": cfg.training.seed}, 1)
    categorical = list(range(len(spec.numeric), len(spec.columns)))
    started = time.perf_counter()
    train_set = lgb.Dataset(*train, categorical_feature=categorical, params=params)
    val_set = lgb.Dataset(*val, reference=train_set, categorical_feature=categorical)
    booster = lgb.train(params, train_set, num_boost_round=model.num_boost_round, valid_sets=[val_set],
                        callbacks=[lgb.early_stopping(model.early_stopping_rounds, first_metric_only=True,
                                                      verbose=False)])
    seconds = time.perf_counter() - started
    auc = float(roc_auc_score(test[1], booster.predict(test[0], num_iteration=booster.best_iteration)))
    return {"auc": auc, "seconds": seconds, "rounds": booster.best_iteration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="mlp,lightgbm,xgboost")
    parser.add_argument("--workers", default=None,
                        help="training.num_workers for every family: a number, or auto (the default of a new "
                             "config: Ray Train's local mode in this process up to training.local_max_rows); "
                             "default: what flights.yaml says (2)")
    args = parser.parse_args()
    os.environ.setdefault("RAYMLOPS_PROGRESS", "0")
    from sklearn.metrics import roc_auc_score

    from raymlops.data.stage import run_data_stage
    from raymlops.model.packaging import load_package
    from raymlops.runtime.session import ray_runtime
    from raymlops.training.trainer import model_spec, run_training

    results: dict = {"families": {}}
    with tempfile.TemporaryDirectory(prefix="family-bench-") as tmp, ray_runtime(num_cpus=2):
        base = flights_config("lightgbm", Path(tmp) / "work")
        data = run_data_stage(base)
        spec = model_spec(base, data)
        target = base.features.target
        train, val = arrays(data.datasets["train"], spec, target), arrays(data.datasets["validation"], spec, target)
        test_frame = data.raw["test"].to_pandas()
        test = arrays(data.datasets["test"], spec, target) if "test" in data.datasets else None
        plain = plain_lightgbm(base, spec, train, val, test)
        results["plain_lightgbm"] = plain
        print(f"plain LightGBM (1 process, 2 threads): test AUC {plain['auc']:.4f}, {plain['seconds']:.1f} s, "
              f"{plain['rounds']} rounds")
        for family in args.families.split(","):
            cfg = flights_config(family, Path(tmp) / "work", args.workers)
            started = time.perf_counter()
            trained = run_training(cfg, data, run_name=f"bench-{family}")
            seconds = time.perf_counter() - started
            from raymlops.model import get_family
            from raymlops.model.packaging import write_package

            pkg = write_package(Path(tmp) / f"pkg-{family}" / "model", model_files=trained.model_files,
                                fitted=data.features, spec=trained.spec, model_config=cfg.model, schema={},
                                profile={}, lineage={})
            scores = load_package(pkg, cfg.model.trusted_builders()).predict_frame(test_frame)
            auc = float(roc_auc_score(test_frame[target].to_numpy(), scores))
            row = {"auc": auc, "seconds": seconds, "auc_minus_plain": auc - plain["auc"],
                   "time_over_plain": seconds / plain["seconds"], "workers": cfg.training.num_workers,
                   "family_impl": get_family(family).trainer_class().__name__}
            results["families"][family] = row
            print(f"raymlops {family:8s} ({row['workers']} workers, {row['family_impl']}): test AUC {auc:.4f} "
                  f"(ours - plain {row['auc_minus_plain']:+.4f}), {seconds:.1f} s "
                  f"(ours / plain {row['time_over_plain']:.2f}x)")
    out = OUT if args.workers is None else OUT.with_name(f"family_bench-workers-{args.workers}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(results, indent=2))
    tmp_out.rename(out)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
