"""Unsafe and corrupted model packages are refused by the loader every serving and scoring path uses.

Guarantees 7 (corrupted artifacts) and 11 (unsafe models) of docs/reliability.md. The attacker here
controls the package's files *and* its manifest (so checksums match): the loader must still never
unpickle, and never call code the package names; and with the registry's record of the manifest's
digest, a rewritten manifest, an added file or a dropped one is refused, on download and on the
workdir's copy alike.
"""

from __future__ import annotations

import json
import pickle
import urllib.parse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from raymlops.errors import ModelPackageError
from raymlops.model.packaging import MANIFEST, PROFILE, WEIGHTS, load_package, manifest_sha256, sha256
from raymlops.registry.store import MANIFEST_TAG, Registry
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


# --- Issue 18, item 1: the manifest is authenticated by the registry, and the file set is exact --------------

def test_a_file_the_manifest_does_not_list_is_refused_naming_it(tmp_path, fitted_and_frame):  # noqa: F811
    _, path = _package(tmp_path, fitted_and_frame[0])
    (path / "extra.py").write_text("print('not part of the package')\n")
    with pytest.raises(ModelPackageError, match="extra.py is not listed in manifest.json"):
        load_package(path)


def test_a_rewritten_manifest_is_refused_against_the_registered_digest(tmp_path, fitted_and_frame):  # noqa: F811
    """Altered weights with a manifest rewritten to match pass the file checks; the registry's digest does not."""
    _, path = _package(tmp_path, fitted_and_frame[0])
    registered = manifest_sha256(path)
    load_package(path, expected_manifest_sha256=registered)  # the registered package loads
    other, _ = _package(tmp_path / "other", fitted_and_frame[0], seed=1)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path / WEIGHTS))
    _rewrite_manifest(path)
    load_package(path)  # only the manifest's own checksums: the swap goes unseen
    with pytest.raises(ModelPackageError, match="manifest.json is not the manifest registered with this version"):
        load_package(path, expected_manifest_sha256=registered)


def _registered(tmp_path, fitted):
    """A package logged to and registered in a real MLflow store (SQLite), as the training stage does."""
    _, path = _package(tmp_path / "built", fitted)
    registry = Registry.for_workdir(tmp_path / "work")
    run_id = registry.start_run("unsafe-models", "attack")
    registry.log_artifacts(run_id, path, "model")
    version = registry.register("victim", run_id, "model", tags={MANIFEST_TAG: manifest_sha256(path)})
    stored = Path(urllib.parse.urlparse(registry.client.get_run(run_id).info.artifact_uri).path) / "model"
    return registry, version, stored


def _attack(folder: Path, attack: str, fitted) -> str:
    if attack == "alter_weights_and_manifest":
        other, _ = _package(folder.parent / "other-weights", fitted, seed=1)
        save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(folder / WEIGHTS))
        _rewrite_manifest(folder)
        return "not the manifest registered"
    if attack == "add_a_file":
        (folder / "sitecustomize.py").write_text("import os\n")
        return "sitecustomize.py is not listed in manifest.json"
    manifest = json.loads((folder / MANIFEST).read_text())  # drop a file and its entry together
    del manifest["files"][PROFILE]
    (folder / PROFILE).unlink()
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return "not the manifest registered"


@pytest.mark.parametrize("attack", ["alter_weights_and_manifest", "add_a_file", "drop_a_file_and_its_entry"])
def test_a_tampered_registry_artifact_is_refused_on_download(tmp_path, fitted_and_frame, attack):  # noqa: F811
    registry, version, stored = _registered(tmp_path, fitted_and_frame[0])
    assert registry.download_package("victim", version, tmp_path / "clean").is_dir()  # untouched: it loads
    expected = _attack(stored, attack, fitted_and_frame[0])
    with pytest.raises(ModelPackageError, match=expected):
        registry.download_package("victim", version, tmp_path / "after")
    with pytest.raises(ModelPackageError, match=expected):
        registry.local_package("victim", version)
    assert not (registry.workdir / "packages" / f"victim-v{version}" / "model").exists()  # nothing kept


@pytest.mark.parametrize("attack", ["alter_weights_and_manifest", "add_a_file", "drop_a_file_and_its_entry"])
def test_a_tampered_workdir_copy_is_refused_on_every_use(tmp_path, fitted_and_frame, attack):  # noqa: F811
    registry, version, _ = _registered(tmp_path, fitted_and_frame[0])
    local = registry.local_package("victim", version)
    load_package(local)
    expected = _attack(local, attack, fitted_and_frame[0])
    with pytest.raises(ModelPackageError, match=expected):
        registry.local_package("victim", version)
