import numpy as np
import pytest
import trimesh

from featurenerf_ns.categories import CATEGORIES
from featurenerf_ns.synthetic.meshio import read_labeled_ply, write_labeled_ply
from featurenerf_ns.synthetic.shapes import KEYPOINT_NAMES, LONGEST_EDGE, MAX_RADIUS, inside_convex, make_object


def _objects(category, n=12, seed0=0):
    return [make_object(category, np.random.default_rng(seed0 + i)) for i in range(n)]


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_parts_keypoints_and_frame(category):
    cat = CATEGORIES[category]
    names = KEYPOINT_NAMES[category]
    assert 8 <= len(names) <= 20 and len(set(names)) == len(names)
    seen_parts = set()
    for obj in _objects(category):
        assert obj.face_labels.shape == (len(obj.mesh.faces),)
        assert obj.face_labels.min() >= 1 and obj.face_labels.max() <= len(cat.parts)
        seen_parts |= set(obj.face_labels.tolist())
        # canonical frame: bbox centred, longest edge LONGEST_EDGE unless the radius cap applies
        lo, hi = obj.mesh.bounds
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)
        radius = np.linalg.norm(obj.mesh.vertices, axis=1).max()
        assert radius <= MAX_RADIUS + 1e-9
        assert (hi - lo).max() == pytest.approx(LONGEST_EDGE) or radius == pytest.approx(MAX_RADIUS)
        # keypoints: sorted unique ids, on the surface, not buried inside another piece
        ids = obj.keypoint_ids
        assert np.all(np.diff(ids) > 0) and ids.min() >= 0 and ids.max() < len(names)
        _, dist, _ = trimesh.proximity.closest_point(obj.mesh, obj.keypoints)
        assert dist.max() < 1e-6
        for p in obj.keypoints:
            assert not any(inside_convex(piece, p[None], 1e-5)[0] for piece in obj.pieces)
        # left = +X, right = -X, front = +Z (where a name says so)
        for p, k in zip(obj.keypoints, ids, strict=True):
            name = names[k]
            if name.endswith("_left") or "_left_" in name:
                assert p[0] > 0, name
            if name.endswith("_right") or "_right_" in name:
                assert p[0] < 0, name
        for k in ids:
            name = names[k]
            if "left" in name and name.replace("left", "right") in names:
                j = names.index(name.replace("left", "right"))
                if j in ids:  # a mirrored pair: mirror images within the object's asymmetries
                    a, b = obj.keypoints[ids == k][0], obj.keypoints[ids == j][0]
                    assert abs(a[0] + b[0]) < 0.05 and abs(a[1] - b[1]) < 0.05 and abs(a[2] - b[2]) < 0.05, name
    assert seen_parts == set(range(1, len(cat.parts) + 1))


def _variants(category, key, n=40):
    return [o.variant[key] for o in _objects(category, n)]


def test_structural_variation():
    chairs = _objects("chair", 40)
    assert {o.variant["arms"] for o in chairs} == {True, False}
    assert {o.variant["legs"] for o in chairs} == {"four", "pedestal"}
    names = KEYPOINT_NAMES["chair"]
    for o in chairs:
        has = {names[k] for k in o.keypoint_ids}
        assert ("arm_front_left" in has) == o.variant["arms"]
        assert ("leg_front_left" in has) == (o.variant["legs"] == "four")
        assert ("base_front" in has) == (o.variant["legs"] == "pedestal")
    assert set(_variants("table", "top")) == {"round", "rectangular"}
    assert set(_variants("airplane", "engines")) == {0, 2, 4}
    sweeps = _variants("airplane", "sweep")
    assert max(sweeps) - min(sweeps) > 0.2
    assert set(_variants("car", "type")) == {"sedan", "hatch", "suv"}
    assert set(_variants("bottle", "lid")) == {True, False}
    assert set(_variants("bottle", "type")) >= {"round", "square"}
    assert set(_variants("motorcycle", "type")) == {"sport", "cruiser", "standard"}
    # proportions really vary: bounding-box aspect ratios spread
    aspects = [np.ptp(o.mesh.vertices[:, 1]) / np.ptp(o.mesh.vertices[:, 0]) for o in chairs]
    assert max(aspects) / min(aspects) > 1.3


def test_shapes_deterministic():
    a = make_object("motorcycle", np.random.default_rng(3))
    b = make_object("motorcycle", np.random.default_rng(3))
    c = make_object("motorcycle", np.random.default_rng(4))
    assert np.array_equal(a.mesh.vertices, b.mesh.vertices) and np.array_equal(a.keypoints, b.keypoints)
    assert np.array_equal(a.texture.part_colors, b.texture.part_colors)
    assert a.mesh.vertices.shape != c.mesh.vertices.shape or not np.array_equal(a.mesh.vertices, c.mesh.vertices)


def test_texture_does_not_give_parts_away():
    # a part's mean colour differs between instances: colour is not a part code
    chairs = _objects("chair", 10)
    seat = [o.texture.part_colors[2] for o in chairs]
    assert np.std(np.array(seat), axis=0).mean() > 0.1
    patterns = {o.texture.pattern for o in _objects("table", 20)}
    assert len(patterns) >= 3


def test_labeled_ply_round_trip(tmp_path):
    obj = make_object("car", np.random.default_rng(0))
    path = tmp_path / "m.ply"
    write_labeled_ply(path, obj.mesh, obj.face_labels)
    mesh, labels = read_labeled_ply(path)
    assert np.array_equal(mesh.vertices, obj.mesh.vertices) and np.array_equal(mesh.faces, obj.mesh.faces)
    assert np.array_equal(labels, obj.face_labels)
    # a standard PLY: trimesh reads the same geometry
    other = trimesh.load(path, process=False)
    assert np.allclose(other.vertices, obj.mesh.vertices) and len(other.faces) == len(obj.mesh.faces)


def test_surface_samples_are_on_the_outer_surface():
    obj = make_object("chair", np.random.default_rng(1))
    pts, labels = obj.sample_surface(np.random.default_rng(0), 500)
    assert pts.shape == (500, 3) and labels.shape == (500,)
    assert set(labels.tolist()) <= set(range(1, 5))
    for piece in obj.pieces:
        assert not inside_convex(piece, pts, 1e-5).any()
