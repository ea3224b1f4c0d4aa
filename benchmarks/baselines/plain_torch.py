"""Baseline of benchmarks/train_bench.py: the MLP family's training loop written by hand, one process, no Ray.

The same model (``build_model`` from ``ModelSpec.from_features`` and the config's ``model``, same seed),
the same data (the transformed train/validation splits pulled into memory with ``to_pandas`` and turned
into tensors once by raymlops' own ``collate``), the same batch size, epochs, Adam learning rate and loss
(``BCEWithLogitsLoss(reduction="sum")`` over the batch length), a fresh permutation per epoch, and per
epoch the same validation pass (batches of 4096, loss + AUC). ``per_batch_collate`` calls ``collate`` on
every shuffled batch instead, as Ray's iterator does, to show what per-batch collation costs.
"""

from __future__ import annotations

import time
from typing import Any


def plain_torch(cfg, data, threads: int, per_batch_collate: bool = False) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from raymlops.model.contract import ModelSpec
    from raymlops.model.mlp import build_model
    from raymlops.model.mlp_worker import collate

    torch.set_num_threads(threads)
    t, target = cfg.training, cfg.features.target
    t0 = time.perf_counter()
    frames = {split: data.datasets[split].to_pandas() for split in ("train", "validation")}
    spec = ModelSpec.from_features(data.features, cfg.model.task)
    fn = collate(spec, target)
    cols = [*spec.numeric, *spec.categorical, target]
    train_np = {c: frames["train"][c].to_numpy() for c in cols}
    xn, xc, y = fn(train_np)
    vn, vc, vy = fn({c: frames["validation"][c].to_numpy() for c in cols})
    n = len(y)
    load_s = time.perf_counter() - t0

    torch.manual_seed(t.seed)
    t_build = time.perf_counter()
    model = build_model(spec, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    first_step = None
    epoch_ends, train_secs, history = [], [], []
    t_epochs = time.perf_counter()
    for epoch in range(t.epochs):
        e0 = time.perf_counter()
        model.train()
        total = 0.0
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(t.seed + epoch))
        for i in range(0, n, t.batch_size):
            if per_batch_collate:
                idx = perm[i:i + t.batch_size].numpy()
                bn, bc, by = fn({c: a[idx] for c, a in train_np.items()})
            else:
                idx = perm[i:i + t.batch_size]
                bn, bc, by = xn[idx], xc[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(bn, bc).float(), by)
            (loss / max(1, len(by))).backward()
            optimizer.step()
            first_step = first_step or time.perf_counter()
            total += loss.item()
        train_secs.append(time.perf_counter() - e0)
        model.eval()
        val_total, scores = 0.0, []
        with torch.no_grad():
            for i in range(0, len(vy), 4096):
                out = model(vn[i:i + 4096], vc[i:i + 4096]).float()
                val_total += loss_fn(out, vy[i:i + 4096]).item()
                scores.append(torch.sigmoid(out).numpy())
        labels = vy.numpy()
        auc = float(roc_auc_score(labels, np.concatenate(scores))) if len(np.unique(labels)) == 2 else float("nan")
        history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_total / max(1, len(vy)), "val_auc": auc})
        epoch_ends.append(time.perf_counter())
    end = time.perf_counter()
    samples = n * t.epochs
    return {"threads": threads, "per_batch_collate": per_batch_collate, "train_rows": n, "epochs": t.epochs,
            "batch_size": t.batch_size, "load_s": load_s, "epochs_s": end - t_epochs, "whole_s": end - t0,
            "samples_per_s_train_val": samples / (end - t_epochs), "samples_per_s_train_only": samples / sum(train_secs),
            "samples_per_s_whole": samples / (end - t0), "first_step_from_start_s": first_step - t0,
            "first_step_from_model_build_s": first_step - t_build, "first_epoch_end_s": epoch_ends[0] - t0,
            "history": history}
