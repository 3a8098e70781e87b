"""CategoryData finds the split file as training does (featurenerf_ns.layout.find_split_file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featurenerf_ns.transfer.data import CategoryData
from featurenerf_ns.utils.io import DataError

SYNSET = "03001627"


def test_split_file_resolution_matches_training(tmp_path: Path):
    for obj in ("r1", "r2"):
        (tmp_path / "img" / SYNSET / obj).mkdir(parents=True)
    data = CategoryData(tmp_path, "chair")
    assert not data.has_split_file() and data.objects("test") == ["r1", "r2"]  # no split file: every render folder

    authors = tmp_path / "assets" / "splits" / f"{SYNSET}.json"
    authors.parent.mkdir(parents=True)
    authors.write_text(json.dumps({"train": [], "val": [], "test": ["a1"]}))
    data = CategoryData(tmp_path, "chair")
    assert data.split_path == authors and data.objects("test") == ["a1"]

    ours = tmp_path / "splits" / f"{SYNSET}.json"
    ours.parent.mkdir()
    ours.write_text(json.dumps({"train": [], "val": [], "test": ["o1", "o2"]}))
    assert CategoryData(tmp_path, "chair").objects("test") == ["o1", "o2"]

    explicit = tmp_path / "run_split.json"
    explicit.write_text(json.dumps({"train": [], "val": [], "test": ["e1"]}))
    assert CategoryData(tmp_path, "chair", split_file=explicit).objects("test") == ["e1"]
    with pytest.raises(DataError, match="split file not found"):
        CategoryData(tmp_path, "chair", split_file=tmp_path / "gone.json")
    with pytest.raises(DataError, match=r"no 'val' list"):
        CategoryData(tmp_path, "chair", split_file=_write(tmp_path / "no_val.json", {"test": []})).objects("val")


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path
