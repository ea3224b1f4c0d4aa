"""A small shard is read once and kept as tensors; each epoch draws its own seeded permutation of it."""

from __future__ import annotations

import numpy as np
import torch

from raymlops.model.contract import ModelSpec
from raymlops.model.mlp_worker import collate, minibatches, shard_tensors


class _Shard:
    """What ``shard_tensors`` uses of a Ray Data shard: batches of numpy columns through a collate callable."""

    def __init__(self, rows: int) -> None:
        rng = np.random.default_rng(0)
        self.columns = {"a": np.arange(rows, dtype=np.float64), "b": rng.normal(size=rows),
                        "x": rng.integers(0, 7, rows), "delayed": (np.arange(rows) % 3 == 0).astype(np.int64)}
        self.reads = 0

    def iter_torch_batches(self, batch_size, collate_fn):
        self.reads += 1
        n = len(self.columns["a"])
        for start in range(0, n, batch_size):
            yield collate_fn({k: v[start:start + batch_size] for k, v in self.columns.items()})


def _fn():
    spec = ModelSpec(task="classification", numeric=["a", "b"], categorical=["x"], cardinalities=[7])
    return collate(spec, "delayed")


def test_a_shard_becomes_one_set_of_tensors_in_its_own_order():
    shard = _Shard(20_000)
    numeric, categorical, y = shard_tensors(shard, _fn())
    assert shard.reads == 1
    assert numeric.shape == (20_000, 2) and categorical.shape == (20_000, 1) and y.shape[0] == 20_000
    assert numeric[:, 0].tolist() == list(range(20_000))  # every row once, in the shard's order
    assert torch.equal(y.flatten(), torch.from_numpy(shard.columns["delayed"]).float())


def test_a_shard_over_the_byte_limit_is_left_to_stream():
    shard = _Shard(20_000)
    assert shard_tensors(shard, _fn(), max_bytes=100_000) is None  # 20,000 rows x 20 bytes
    assert shard_tensors(_Shard(0), _fn()) is None  # nothing to keep: the streaming path handles it


def test_each_epoch_sees_every_row_once_in_a_permutation_its_seed_repeats():
    tensors = shard_tensors(_Shard(1_000), _fn())

    def epoch(seed):
        batches = list(minibatches(tensors, 128, seed=seed))
        assert [len(b[2]) for b in batches] == [128] * 7 + [104]
        return torch.cat([b[0][:, 0] for b in batches]).long().tolist()

    first, again, other = epoch(5), epoch(5), epoch(6)
    assert sorted(first) == list(range(1_000))
    assert first == again  # a resumed run's epoch 5 draws what the undisturbed run's did
    assert first != other and first != list(range(1_000))


def test_validation_batches_keep_the_order():
    tensors = shard_tensors(_Shard(10_000), _fn())
    batches = list(minibatches(tensors, 4096))
    assert [len(b[2]) for b in batches] == [4096, 4096, 1808]
    assert torch.cat([b[0][:, 0] for b in batches]).long().tolist() == list(range(10_000))


def test_the_optimizer_saved_without_pickle_resumes_exactly(tmp_path):
    """Adam's state (step counts, moments) and settings round-trip through safetensors + JSON: the next step
    after a reload moves the weights exactly as the undisturbed optimizer does."""
    from raymlops.model.mlp_worker import OPTIMIZER, OPTIMIZER_SETTINGS, load_optimizer, save_optimizer

    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randn(64, 1)

    def model_and_optimizer():
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        return model, torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.95))

    def step(model, optimizer):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    model, optimizer = model_and_optimizer()
    for _ in range(3):
        step(model, optimizer)
    save_optimizer(optimizer, tmp_path)
    assert (tmp_path / OPTIMIZER).is_file() and (tmp_path / OPTIMIZER_SETTINGS).is_file()
    resumed_model, resumed = model_and_optimizer()
    resumed_model.load_state_dict(model.state_dict())
    load_optimizer(resumed, tmp_path)
    assert resumed.param_groups[0]["betas"] == (0.8, 0.95)
    step(model, optimizer)
    step(resumed_model, resumed)
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_weighted_shard_carries_its_weights_and_the_batch_loss_weighs_each_row():
    from raymlops.model.mlp import loss_for
    from raymlops.model.mlp_worker import weighted_batch_loss

    shard = _Shard(1_000)
    shard.columns["w"] = np.linspace(0.0, 2.0, 1_000)
    spec = ModelSpec(task="classification", numeric=["a", "b"], categorical=["x"], cardinalities=[7])
    numeric, categorical, y, w = shard_tensors(shard, collate(spec, "delayed", "w"))
    assert w.dtype == torch.float32 and torch.allclose(w, torch.from_numpy(shard.columns["w"]).float())
    logits = torch.linspace(-2, 2, 1_000)
    per_row = loss_for("classification", reduction="none")(logits, y)
    assert torch.allclose(weighted_batch_loss(per_row, torch.ones(1_000)),
                          loss_for("classification", reduction="sum")(logits, y))  # unweighted: the plain sum
    assert torch.allclose(weighted_batch_loss(per_row, w), (per_row * w).sum())
    halves = torch.zeros(1_000)
    halves[:500] = 1
    assert torch.allclose(weighted_batch_loss(per_row, halves), per_row[:500].sum())  # weight 0: not learned
    regression = loss_for("regression", reduction="none")(torch.zeros(4, 1), torch.ones(4, 1))
    assert weighted_batch_loss(regression, torch.tensor([1.0, 0, 0, 3])).item() == 4.0
