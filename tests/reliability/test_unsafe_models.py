"""Unsafe and corrupted model packages are refused by the loader every serving and scoring path uses.

Guarantees 7 (corrupted artifacts) and 11 (unsafe models) of docs/reliability.md. The attacker here
controls the package's files *and* its manifest (so checksums match): the loader must still never
unpickle, and never call code the package names.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from raymlops.errors import ModelPackageError
from raymlops.packaging import MANIFEST, WEIGHTS, load_package, sha256
from tests.unit.test_models_and_packaging import _package, fitted_and_frame  # noqa: F401

pytestmark = pytest.mark.reliability
RAN: list[str] = []


class _Payload:
    """Unpickling this would run code (it records that it did)."""

    def __reduce__(self):
        return (RAN.append, ("unpickled",))


def _rewrite_manifest(path, **changes):
    manifest = json.loads((path / MANIFEST).read_text())
    for key, value in changes.items():
        manifest[key] = value
    manifest["files"] = {name: sha256(path / name) for name in manifest["files"]}
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_pickled_weights_with_a_matching_checksum_are_refused_unread(tmp_path, fitted_and_frame):  # noqa: F811
    _, path = _package(tmp_path, fitted_and_frame[0])
    (path / WEIGHTS).write_bytes(pickle.dumps(_Payload()))
    _rewrite_manifest(path)
    with pytest.raises(ModelPackageError, match="not a safetensors file.*never unpickles"):
        load_package(path)
    assert RAN == []


def test_torch_save_weights_are_refused(tmp_path, fitted_and_frame):  # noqa: F811
    model, path = _package(tmp_path, fitted_and_frame[0])
    torch.save({"state_dict": model.state_dict(), "payload": _Payload()}, path / WEIGHTS)
    _rewrite_manifest(path)
    with pytest.raises(ModelPackageError, match="not a safetensors file"):
        load_package(path)
    assert RAN == []


def test_a_package_cannot_choose_code_to_run(tmp_path, fitted_and_frame):  # noqa: F811
    _, path = _package(tmp_path, fitted_and_frame[0])
    manifest = json.loads((path / MANIFEST).read_text())
    _rewrite_manifest(path, model_config={**manifest["model_config"], "builder": "os:system"})
    with pytest.raises(ModelPackageError, match="builder 'os:system'.*cannot choose code"):
        load_package(path)
    # A builder is run only when the loading side's config names it itself.
    ours = "tests.unit.test_models_and_packaging:tiny_builder"
    _rewrite_manifest(path, model_config={**manifest["model_config"], "builder": ours})
    with pytest.raises(ModelPackageError, match="cannot choose code"):
        load_package(path)
    with pytest.raises(ModelPackageError, match="weights do not fit"):  # trusted, so built; then refused on fit
        load_package(path, trusted_builders=(ours,))


@pytest.mark.parametrize("damage", ["truncate_weights", "flip_a_byte", "drop_features", "garble_manifest"])
def test_corrupted_packages_are_refused_naming_the_file(tmp_path, fitted_and_frame, damage):  # noqa: F811
    _, path = _package(tmp_path, fitted_and_frame[0])
    if damage == "truncate_weights":
        data = (path / WEIGHTS).read_bytes()
        (path / WEIGHTS).write_bytes(data[: len(data) // 2])
        expected = f"{WEIGHTS} does not match the checksum"
    elif damage == "flip_a_byte":
        data = bytearray((path / WEIGHTS).read_bytes())
        data[-1] ^= 0xFF
        (path / WEIGHTS).write_bytes(bytes(data))
        expected = "truncated or tampered"
    elif damage == "drop_features":
        (path / "features.json").unlink()
        expected = "features.json is missing"
    else:
        (path / MANIFEST).write_text("{not json")
        expected = "not valid JSON"
    with pytest.raises(ModelPackageError, match=expected):
        load_package(path)
