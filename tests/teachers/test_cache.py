"""Teacher cache: float16 round trip, fingerprint refusal, resume, sharding, the authors' npz files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.teachers.cache import (
    FINGERPRINT_FILE,
    StaleCacheError,
    cache_path,
    check_fingerprint,
    extract_category,
    load_rgba,
    object_ids,
    parse_shard,
    shard_ids,
    view_paths,
)
from featurenerf_ns.teachers.dino import DinoTeacherConfig
from featurenerf_ns.teachers.store import encode_teacher_features, open_teacher_features
from featurenerf_ns.utils.io import DataError
from tests.teachers.teacher_helpers import TINY_ARCH, make_category

SYNSET = "03001627"


@pytest.fixture
def category(tmp_path):
    root = tmp_path / "shapenet"
    ids = make_category(root, SYNSET)
    return CategoryLayout(root, SYNSET), ids


def _teacher(weights, **kw):
    return DinoTeacherConfig(weights=weights, arch=dict(TINY_ARCH), input_size=32, **kw).setup(category="chair")


def _extract(teacher, layout, ids, folder="tiny_dino", **kw):
    return extract_category(teacher, layout, ids, folder, progress=False, **kw)


@pytest.mark.parametrize("sparse", [True, False])
def test_round_trip_float16_memory_mapped(category, tiny_vit_file, sparse):
    layout, ids = category
    teacher = _teacher(tiny_vit_file)
    report = _extract(teacher, layout, ids, sparse=sparse)
    assert report.done == ids and report.skipped == []
    folder = layout.root / "tiny_dino" / SYNSET
    for obj_id in ids:
        raw = np.load(cache_path(folder, obj_id))
        feats = open_teacher_features(cache_path(folder, obj_id))
        if sparse:
            assert raw.dtype == np.uint8 and raw.ndim == 1
            assert isinstance(feats._sparse.cells.base, np.memmap) or isinstance(feats._sparse.cells, np.memmap)
            assert feats._sparse.cells.dtype == np.float16
        else:
            assert raw.dtype == np.float16 and raw.shape == (3, 48, 4, 4)
            assert isinstance(feats._array(), np.memmap)
        assert (feats.num_views, feats.dim, feats.shape) == (3, 48, (3, 48, 4, 4))
        want = teacher(torch.from_numpy(load_rgba(view_paths(layout.image_dir(obj_id))))).numpy()
        got = feats.read([2, 0])
        assert got.dtype == np.float32 and got.shape == (2, 48, 4, 4)
        np.testing.assert_allclose(got, want[[2, 0]], rtol=2e-3, atol=2e-3)
        assert (got[want[[2, 0]] == 0] == 0).all()  # masked cells stay exactly zero
    size = cache_path(folder, ids[0]).stat().st_size
    if sparse:  # header + mask + float16 foreground cells only
        fg = int(open_teacher_features(cache_path(folder, ids[0]))._sparse.mask.sum())
        assert size == 128 + 64 + 64 + fg * 48 * 2 and 0 < fg < 3 * 16
    else:  # half the bytes of the same float32 arrays (plus the 128-byte npy header)
        assert size == 3 * 48 * 16 * 2 + 128
    assert check_fingerprint(folder, {"teacher": "dino", "layer": 9, "dim": 48})["image_size"] == [16, 16]


def test_stale_fingerprint_refused_then_overwritten(category, tiny_vit_file):
    layout, ids = category
    _extract(_teacher(tiny_vit_file), layout, ids)
    folder = layout.root / "tiny_dino" / SYNSET
    other = _teacher(tiny_vit_file, layer=8)
    with pytest.raises(StaleCacheError, match="layer: 9 != 8") as e:
        _extract(other, layout, ids[:1])
    assert "--overwrite" in str(e.value) and "\n" not in str(e.value)
    before = np.load(cache_path(folder, ids[0]))
    report = _extract(other, layout, ids[:2], overwrite=True)
    assert report.done == ids[:2]
    assert not np.array_equal(before, np.load(cache_path(folder, ids[0])))
    # The other objects were made with the old settings: removed, not left under the new fingerprint.
    assert sorted(p.stem for p in folder.glob("*.npy")) == ids[:2]
    with pytest.raises(StaleCacheError, match=FINGERPRINT_FILE):
        check_fingerprint(folder, {"layer": 9})
    assert check_fingerprint(folder, {"layer": 8, "facet": "key"})["layer"] == 8


def test_resume_after_interruption(category, tiny_vit_file):
    layout, ids = category
    teacher = _teacher(tiny_vit_file)
    count = {"n": 0}

    def crash_after_two(obj_id):
        count["n"] += 1
        if count["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _extract(teacher, layout, ids, on_object=crash_after_two)
    folder = layout.root / "tiny_dino" / SYNSET
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{i}.npy" for i in ids[:2]] + [FINGERPRINT_FILE])
    report = _extract(teacher, layout, ids)
    assert report.skipped == ids[:2] and report.done == ids[2:]
    _extract(teacher, layout, ids, folder="full")
    for obj_id in ids:
        np.testing.assert_array_equal(
            np.load(cache_path(folder, obj_id)), np.load(cache_path(layout.root / "full" / SYNSET, obj_id))
        )


def test_truncated_file_is_recomputed(category, tiny_vit_file):
    layout, ids = category
    teacher = _teacher(tiny_vit_file)
    _extract(teacher, layout, ids[:1])
    path = cache_path(layout.root / "tiny_dino" / SYNSET, ids[0])
    np.save(path, np.zeros((1, 48, 4, 4), np.float16))  # wrong view count, e.g. from another image set
    assert _extract(teacher, layout, ids[:1]).done == ids[:1]
    assert open_teacher_features(path).num_views == 3


@pytest.mark.parametrize("shape,zero_frac", [((3, 5, 4, 4), 0.6), ((1, 2, 3, 5), 0.0), ((2, 3, 2, 2), 1.0)])
def test_sparse_codec_is_lossless_wrt_float16(tmp_path, shape, zero_frac):
    rng = np.random.default_rng(1)
    feats = rng.standard_normal(shape).astype(np.float32)
    feats *= rng.random((shape[0], 1, shape[2], shape[3])) >= zero_frac  # zero whole cells
    feats[0, :, 0, 0] = 1e-9  # underflows to 0 in float16: stored as an empty cell, read as 0
    path = tmp_path / "x.npy"
    np.save(path, encode_teacher_features(feats))
    store = open_teacher_features(path)
    assert store.shape == shape
    views = list(range(shape[0]))[::-1]
    np.testing.assert_array_equal(store.read(views), feats.astype(np.float16).astype(np.float32)[views])
    # A file cut short is refused with one line naming it.
    raw = np.load(path)
    np.save(path, raw[:-2] if raw.size > 64 else raw[:10])
    with pytest.raises(DataError, match="x.npy"):
        open_teacher_features(path)


def test_two_shards_equal_one_full_run(category, tiny_vit_file):
    layout, ids = category
    teacher = _teacher(tiny_vit_file)
    all_ids = object_ids(layout.split_file(), "all")
    assert all_ids == ids
    s0, s1 = shard_ids(all_ids, parse_shard("0/2")), shard_ids(all_ids, parse_shard("1/2"))
    assert sorted(s0 + s1) == sorted(ids) and not set(s0) & set(s1)
    _extract(teacher, layout, s1, folder="sharded")
    _extract(teacher, layout, s0, folder="sharded")
    _extract(teacher, layout, ids, folder="full")
    sharded, full = layout.root / "sharded" / SYNSET, layout.root / "full" / SYNSET
    assert sorted(p.name for p in sharded.iterdir()) == sorted(p.name for p in full.iterdir())
    for obj_id in ids:
        np.testing.assert_array_equal(np.load(cache_path(sharded, obj_id)), np.load(cache_path(full, obj_id)))
    assert (sharded / FINGERPRINT_FILE).read_text() == (full / FINGERPRINT_FILE).read_text()


def test_splits_and_shard_parsing(category):
    layout, ids = category
    assert object_ids(layout.split_file(), "train") == ids[:3]
    assert object_ids(layout.split_file(), "test") == ids[4:]
    with pytest.raises(ValueError):
        parse_shard("2/2")
    with pytest.raises(ValueError):
        parse_shard("x")


def test_authors_npz_read_as_they_are(tmp_path, category, tiny_vit_file):
    layout, ids = category
    feats = np.random.default_rng(0).standard_normal((4, 384, 32, 32)).astype(np.float32)
    feats[:, :, :10] = 0
    folder = layout.root / "dino_feat_256" / SYNSET
    folder.mkdir(parents=True)
    np.savez_compressed(folder / f"{ids[0]}.npz", feats=feats)
    store = open_teacher_features(folder / f"{ids[0]}.npz")
    assert (store.num_views, store.dim, store.shape) == (4, 384, (4, 384, 32, 32))
    np.testing.assert_array_equal(store.read([3, 1]), feats[[3, 1]])
    assert check_fingerprint(folder, {"teacher": "dino"}) is None  # no fingerprint: taken as they are
    # Extraction into the authors' folder keeps their files and does the rest.
    report = _extract(_teacher(tiny_vit_file), layout, ids[:2], folder="dino_feat_256")
    assert report.skipped == ids[:1] and report.done == ids[1:2]
    np.testing.assert_array_equal(open_teacher_features(folder / f"{ids[0]}.npz").read([0]), feats[:1])
