"""The model families on the flagship task: test AUC and training time of each family trained by
raymlops, against the named baseline "plain LightGBM", a single-process ``lightgbm.train`` fitted on the
same split in the same run.

The data stage of ``configs/flights.yaml`` runs once (January-March train/validation, April test) on a
local Ray with 2 CPUs. Then, for each family (``mlp`` as configured there, ``lightgbm`` and ``xgboost``
with their defaults), ``run_training`` trains on the config's Ray Train workers (2, or ``--workers``) and
the model scores the transformed test split; training time is the whole ``run_training`` call (trainer
start, workers, data hand-over, checkpoints). The baseline trains in this process on the same
transformed rows as numpy arrays: the same feature matrix and categorical columns, the parameters of
raymlops' LightGBM family, 2 threads, the same early stopping on the validation split.

Run (prepare the flights data first; ``--quick`` uses the 3,000-row smoke config instead)::

    .venv/bin/python examples/flights/prepare.py --out examples/flights/data   # once
    .venv/bin/python benchmarks/family_bench.py [--families mlp,lightgbm,xgboost] [--workers auto]

Writes ``benchmarks/out/family_bench.json`` (``family_bench-workers-<n>.json`` with ``--workers``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import harness
import numpy as np
from harness import REPO, Comparison

BASELINE = "plain LightGBM (1 process, 2 threads)"


def config(case: str, family: str, workdir: Path, workers: str | None):
    def edit(data: dict) -> None:
        data["tuning"] = {"enabled": False}
        if workers is not None:
            data["training"]["num_workers"] = workers if workers == "auto" else int(workers)
        if family != data.get("model", {}).get("family", "mlp"):
            data["model"] = {"task": "classification", "family": family}
            if family == "mlp":
                data["model"].update(hidden_sizes=[64, 32], dropout=0.1, embedding_dim=8)

    return harness.bench_config(case, workdir, edit)


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

    def fit():
        train_set = lgb.Dataset(*train, categorical_feature=categorical, params=params)
        val_set = lgb.Dataset(*val, reference=train_set, categorical_feature=categorical)
        return lgb.train(params, train_set, num_boost_round=model.num_boost_round, valid_sets=[val_set],
                         callbacks=[lgb.early_stopping(model.early_stopping_rounds, first_metric_only=True,
                                                       verbose=False)])

    booster, usage = harness.measure(fit)
    auc = float(roc_auc_score(test[1], booster.predict(test[0], num_iteration=booster.best_iteration)))
    return {"auc": auc, "seconds": usage.wall_s, "cpu_s": usage.cpu_s, "rounds": booster.best_iteration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="mlp,lightgbm,xgboost")
    parser.add_argument("--workers", default=None,
                        help="training.num_workers for every family: a number, or auto (the default of a new "
                             "config: Ray Train's local mode in this process up to training.local_max_rows); "
                             "default: what the config says (flights.yaml: 2)")
    parser.add_argument("--quick", action="store_true", help="the 3,000-row smoke config instead of flights")
    parser.add_argument("--max-wait", type=float, default=60.0, help="wait up to this long for a quiet machine")
    args = parser.parse_args()
    case = "smoke" if args.quick else "flights"
    if case == "flights" and not (REPO / "examples/flights/data/flights/2013-04.parquet").is_file():
        raise SystemExit("flights data missing; run: .venv/bin/python examples/flights/prepare.py --out "
                         "examples/flights/data (or use --quick)")
    os.environ.setdefault("RAYMLOPS_PROGRESS", "0")
    from sklearn.metrics import roc_auc_score

    from raymlops.data.stage import run_data_stage
    from raymlops.model import get_family
    from raymlops.model.packaging import load_package, write_package
    from raymlops.runtime.session import ray_runtime
    from raymlops.training.trainer import model_spec, run_training

    details: dict = {"case": case, "families": {}}
    comparisons: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="family-bench-") as tmp, ray_runtime(num_cpus=2):
        base = config(case, "lightgbm", Path(tmp) / "work", args.workers)
        data = run_data_stage(base)
        spec = model_spec(base, data)
        target = base.features.target
        train, val = arrays(data.datasets["train"], spec, target), arrays(data.datasets["validation"], spec, target)
        test = arrays(data.datasets["test"], spec, target)
        test_frame = data.raw["test"].to_pandas()
        harness.wait_for_quiet(args.max_wait)
        with harness.CpuWatch() as watch:
            plain = details["plain_lightgbm"] = plain_lightgbm(base, spec, train, val, test)
        plain["machine"] = watch.result()
        print(f"plain LightGBM: test AUC {plain['auc']:.4f} in {plain['seconds']:.1f} s ({plain['rounds']} rounds)")
        for family in args.families.split(","):
            cfg = config(case, family, Path(tmp) / "work", args.workers)
            harness.wait_for_quiet(args.max_wait)
            with harness.CpuWatch() as watch:
                trained, usage = harness.measure(lambda cfg=cfg, family=family:
                                                 run_training(cfg, data, run_name=f"bench-{family}"))
            pkg = write_package(Path(tmp) / f"pkg-{family}" / "model", model_files=trained.model_files,
                                fitted=data.features, spec=trained.spec, model_config=cfg.model, schema={},
                                profile={}, lineage={})
            scores = load_package(pkg, cfg.model.trusted_builders()).predict_frame(test_frame)
            auc = float(roc_auc_score(test_frame[target].to_numpy(), scores))
            row = details["families"][family] = {
                "auc": auc, "seconds": usage.wall_s, "driver_cpu_s": usage.cpu_s, "workers": cfg.training.num_workers,
                "family_impl": get_family(family).trainer_class().__name__, "machine": watch.result()}
            print(f"raymlops {family}: test AUC {auc:.4f} in {usage.wall_s:.1f} s ({row['workers']} workers)")
            label = f"{case}, {family}, {row['workers']} workers"
            comparisons += [
                Comparison("family_bench", f"{label}: test AUC", auc, plain["auc"], BASELINE, "AUC",
                           higher_is_better=True),
                Comparison("family_bench", f"{label}: training time", usage.wall_s, plain["seconds"], BASELINE, "s",
                           extra={"disturbed": row["machine"]["disturbed"] or plain["machine"]["disturbed"]})]
    harness.print_comparisons(comparisons)
    name = "family_bench" if args.workers is None else f"family_bench-workers-{args.workers}"
    harness.write_results(__file__, comparisons, details, args, name=name)


if __name__ == "__main__":
    main()
