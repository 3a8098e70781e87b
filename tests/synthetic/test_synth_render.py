import numpy as np
import trimesh

from featurenerf_ns.geometry import CAMERA_DISTANCE
from featurenerf_ns.synthetic.render import FAR, NEAR, ObjectRenderer, sample_poses
from featurenerf_ns.synthetic.shapes import make_object


def test_uses_embree():
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    r = ObjectRenderer(make_object("bottle", np.random.default_rng(0)))
    assert isinstance(r.caster.intersector, RayMeshIntersector)


def test_poses_look_at_origin_from_upper_hemisphere():
    poses = sample_poses(np.random.default_rng(0), 20)
    for c2w in poses:
        R, t = c2w[:3, :3], c2w[:3, 3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) > 0
        assert np.linalg.norm(t) == CAMERA_DISTANCE or abs(np.linalg.norm(t) - CAMERA_DISTANCE) < 1e-12
        assert t[1] > 0.1
        np.testing.assert_allclose(R[:, 2], -t / np.linalg.norm(t), atol=1e-12)  # OpenCV z looks at the origin
        assert R[1, 1] < 0  # OpenCV y points down in the image: world up is image up


def test_render_alpha_labels_and_near_far():
    obj = make_object("chair", np.random.default_rng(2))
    r = ObjectRenderer(obj)
    for c2w in sample_poses(np.random.default_rng(3), 3):
        v = r.render(c2w, 40, 40)
        assert v.rgba.shape == (40, 40, 4) and v.rgba.dtype == np.uint8
        fg = v.rgba[..., 3] > 0
        assert np.array_equal(fg, v.labels > 0) and np.array_equal(fg, v.coverage > 0)
        assert np.all(v.rgba[~fg, :3] == 0)
        assert 0.02 < fg.mean() < 0.9
        assert not fg[0].any() and not fg[-1].any() and not fg[:, 0].any() and not fg[:, -1].any()  # fits the frame
        d = np.linalg.norm(v.points[fg] - c2w[:3, 3], axis=1)
        assert d.min() > NEAR and d.max() < FAR
        # the hit point lies on a face of the labelled part
        _, dist, tri = trimesh.proximity.closest_point(obj.mesh, v.points[fg].astype(np.float64))
        assert dist.max() < 1e-4
        np.testing.assert_allclose(np.linalg.norm(v.normals[fg], axis=1), 1, atol=1e-5)


def test_visibility_of_back_side():
    obj = make_object("table", np.random.default_rng(0))
    r = ObjectRenderer(obj)
    top = np.array([[0.0, obj.mesh.bounds[1][1], 0.0]])
    above = np.eye(4)
    above[:3, 3] = (0.0, 1.3, 0.0)  # orientation is irrelevant to visibility
    below = above.copy()
    below[:3, 3] = (0.0, -1.3, 0.0)
    assert r.visible(top, above)[0] and not r.visible(top, below)[0]
