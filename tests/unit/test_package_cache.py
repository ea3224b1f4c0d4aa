"""The node's package cache: whole copies only, a champion pointer that ages out, private folders only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raymlops.serving.package_cache import PackageCache


def _fake_download(calls: list[str], version: str, fail: bool = False):
    def download(dest: Path) -> Path:
        calls.append(version)
        landed = dest / "model"
        landed.mkdir()
        (landed / "weights.safetensors").write_bytes(b"w" * 10)
        if fail:
            raise OSError("connection reset half-way")
        (landed / "manifest.json").write_text("{}")
        return landed
    return download


def test_a_version_is_downloaded_once_per_node_and_whole(tmp_path):
    a = PackageCache.for_model("sqlite:///x.db", "m", base=tmp_path)
    b = PackageCache.for_model("sqlite:///x.db", "m", base=tmp_path)  # a second replica on the node
    calls: list[str] = []
    first = a.fetch("1", _fake_download(calls, "1"))
    again = b.fetch("1", _fake_download(calls, "1"))
    assert first == again and calls == ["1"] and (first / "manifest.json").is_file()
    assert a.shared and oct(os.stat(a.root).st_mode & 0o777) == "0o700"
    # Another registry or model never shares the copy.
    assert PackageCache.for_model("sqlite:///y.db", "m", base=tmp_path).root != a.root


def test_a_download_that_fails_half_way_leaves_nothing_that_looks_complete(tmp_path):
    cache = PackageCache.for_model("sqlite:///x.db", "m", base=tmp_path)
    with pytest.raises(OSError, match="half-way"):
        cache.fetch("2", _fake_download([], "2", fail=True))
    assert not cache.has("2") and list(cache.root.iterdir()) == []


def test_the_confirmed_champion_ages_out(tmp_path):
    cache = PackageCache.for_model("sqlite:///x.db", "m", base=tmp_path)
    assert cache.confirmed_champion(max_age_s=10) is None
    cache.note_champion("3", now=1000.0)
    assert cache.confirmed_champion(max_age_s=10, now=1009.0) == "3"
    assert cache.confirmed_champion(max_age_s=10, now=1011.0) is None
    assert cache.confirmed_champion(max_age_s=10, now=990.0) is None  # a clock that went back proves nothing
    (cache.root / "champion.json").write_text("{not json")
    assert cache.confirmed_champion(max_age_s=10) is None


def test_discard_and_prune_keep_what_is_served_and_the_newest(tmp_path):
    cache = PackageCache.for_model("sqlite:///x.db", "m", base=tmp_path)
    for i, v in enumerate(["1", "2", "3", "4", "5"]):
        path = cache.fetch(v, _fake_download([], v))
        os.utime(path, (1000 + i, 1000 + i))
    assert sorted(cache.prune(keep={"1"}, keep_newest=2)) == ["2", "3"]
    assert sorted(p.name for p in cache.root.glob("v*")) == ["v1", "v4", "v5"]
    cache.discard("5")
    assert not cache.has("5")


def test_a_folder_others_can_write_to_is_not_shared(tmp_path):
    base = tmp_path / f"raymlops-packages-{os.getuid()}"
    base.mkdir(mode=0o777)
    os.chmod(base, 0o777)
    cache = PackageCache.for_model("sqlite:///x.db", "m", base=tmp_path)
    try:
        assert not cache.shared and not cache.root.is_relative_to(base)
        assert cache.fetch("1", _fake_download([], "1")).is_dir()
    finally:
        cache.close()
    assert not cache.root.exists()
