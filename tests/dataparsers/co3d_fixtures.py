"""Tiny CO3D v2 categories in the real format, built by the tests.

Cameras are made in OpenCV form (easy to aim) and written in PyTorch3D's NDC convention with the
inverse of the documented conversion, computed here independently of the code under test:
PyTorch3D row-vector ``X_cam = X @ R + T`` with camera +X left, +Y up, so ``R = R_w2c^T diag(-1,-1,1)``,
``T = diag(-1,-1,1) t_w2c``; NDC ``f = f_px / scale``, ``p = (half - c_px) / scale``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from featurenerf_ns.geometry import CAMERA_ANGLE_X, focal_from_fov, look_at_opencv, sphere_direction

FLIP = np.array([-1.0, -1.0, 1.0])


@dataclass
class FixtureFrame:
    image: np.ndarray
    """(H, W, 3) uint8."""
    mask: np.ndarray
    """(H, W) uint8."""
    c2w: np.ndarray
    """(4, 4) OpenCV camera-to-world."""
    K: np.ndarray
    """[fx, fy, cx, cy], continuous pixel coordinates (pixel i centred at i + 0.5)."""
    fmt: str = "ndc_norm_image_bounds"


@dataclass
class FixtureSequence:
    name: str
    frames: list[FixtureFrame]
    quality: float | None = 1.0
    extra: dict = field(default_factory=dict)


def to_pytorch3d(c2w: np.ndarray, K: np.ndarray, hw: tuple[int, int], fmt: str) -> dict:
    """The ``viewpoint`` annotation of an OpenCV camera."""
    w2c = np.linalg.inv(c2w)
    R = w2c[:3, :3].T * FLIP[None, :]
    T = FLIP * w2c[:3, 3]
    h, w = hw
    half = np.array([w / 2.0, h / 2.0])
    scale = half if fmt == "ndc_norm_image_bounds" else np.full(2, half.min())
    focal = np.asarray(K[:2]) / scale
    pp = (half - np.asarray(K[2:])) / scale
    return {
        "R": R.tolist(),
        "T": T.tolist(),
        "focal_length": focal.tolist(),
        "principal_point": pp.tolist(),
        "intrinsics_format": fmt,
    }


def pytorch3d_pixel(viewpoint: dict, hw: tuple[int, int], X: np.ndarray) -> np.ndarray:
    """PyTorch3D's forward model: world point -> continuous pixel (u right, v down, corner at 0)."""
    Xc = np.asarray(X, float) @ np.asarray(viewpoint["R"]) + np.asarray(viewpoint["T"])
    ndc = np.asarray(viewpoint["focal_length"]) * Xc[:2] / Xc[2] + np.asarray(viewpoint["principal_point"])
    h, w = hw
    half = np.array([w / 2.0, h / 2.0])
    scale = half if viewpoint["intrinsics_format"] == "ndc_norm_image_bounds" else np.full(2, half.min())
    return half - ndc * scale  # NDC +X is left and +Y up: both flip


def write_category(
    root: Path,
    category: str,
    sequences: list[FixtureSequence],
    set_lists: dict[str, dict[str, list[str]]],
    image_ext: str = ".jpg",
) -> Path:
    """Write ``<root>/<category>/`` (images, masks, annotations, set lists); returns the category folder."""
    cat = root / category
    frames_ann, seq_ann = [], []
    for seq in sequences:
        for i, fr in enumerate(seq.frames):
            h, w = fr.image.shape[:2]
            img_rel = f"{category}/{seq.name}/images/frame{i + 1:06d}{image_ext}"
            mask_rel = f"{category}/{seq.name}/masks/frame{i + 1:06d}.png"
            (root / img_rel).parent.mkdir(parents=True, exist_ok=True)
            (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            # lossless-ish JPEG: the tests locate a few-pixel marker in the crops
            Image.fromarray(fr.image).save(
                root / img_rel, **({"quality": 100, "subsampling": 0} if image_ext == ".jpg" else {})
            )
            Image.fromarray(fr.mask).save(root / mask_rel)
            frames_ann.append(
                {
                    "sequence_name": seq.name,
                    "frame_number": i + 1,
                    "frame_timestamp": i / 30.0,
                    "image": {"path": img_rel, "size": [h, w]},
                    "depth": None,
                    "mask": {"path": mask_rel, "mass": float((fr.mask > 127).sum())},
                    "viewpoint": to_pytorch3d(fr.c2w, fr.K, (h, w), fr.fmt),
                    "meta": {},
                }
            )
        seq_ann.append(
            {
                "sequence_name": seq.name,
                "category": category,
                "video": {"path": f"{category}/{seq.name}/video.mp4", "length": len(seq.frames)},
                "point_cloud": None,
                "viewpoint_quality_score": seq.quality,
            }
        )
    cat.mkdir(parents=True, exist_ok=True)
    with gzip.open(cat / "frame_annotations.jgz", "wt") as f:
        json.dump(frames_ann, f)
    with gzip.open(cat / "sequence_annotations.jgz", "wt") as f:
        json.dump(seq_ann, f)
    (cat / "set_lists").mkdir(exist_ok=True)
    by_name = {s.name: s for s in sequences}
    for subset, splits in set_lists.items():
        content = {
            split: [
                [name, i + 1, f"{category}/{name}/images/frame{i + 1:06d}{image_ext}"]
                for name in names
                for i in range(len(by_name[name].frames))
            ]
            for split, names in splits.items()
        }
        (cat / "set_lists" / f"set_lists_{subset}.json").write_text(json.dumps(content))
    return cat


# ------------------------------------------------------------------------------------------ sphere scenes
SPHERE_CENTER = np.array([0.4, -0.3, 2.0])
"""World centre of the sphere every camera of :func:`sphere_sequence` looks at."""
SPHERE_RADIUS = 0.8
MARKER = np.array([0.4, -0.3 + 0.8, 2.0])
"""A point on the sphere's top, painted red in every image where it faces the camera."""


def sphere_sequence(
    name: str,
    rng: np.random.Generator,
    num_frames: int = 4,
    sizes=((60, 80), (72, 56), (64, 64), (50, 90)),
    fmt: str | None = None,
    quality: float | None = 1.0,
    empty_masks: bool = False,
) -> FixtureSequence:
    """Cameras on a ring (distance 4) around :data:`SPHERE_CENTER`, images of varying sizes.

    The image is the sphere's disc (blue) with a red marker at the projection of :data:`MARKER`;
    the mask is the disc. ``fmt`` None alternates the two intrinsics formats.
    """
    frames = []
    for i in range(num_frames):
        h, w = sizes[i % len(sizes)]
        az = 2 * np.pi * i / num_frames + rng.uniform(-0.2, 0.2)
        el = np.radians(rng.uniform(55, 75))
        dist = 4.0 * rng.uniform(0.9, 1.1)
        eye = SPHERE_CENTER + dist * sphere_direction(az, el)
        # aim a little off the centre so the principal point is not the sphere's projection
        c2w = look_at_opencv(eye, SPHERE_CENTER + rng.normal(0, 0.15, 3))
        f = rng.uniform(0.6, 0.8) * max(h, w)
        K = np.array([f, f * rng.uniform(0.95, 1.05), w / 2 + rng.uniform(-4, 4), h / 2 + rng.uniform(-4, 4)])
        uv_c, depth = project_cv(c2w, K, SPHERE_CENTER)
        r_px = K[0] * SPHERE_RADIUS / np.sqrt(depth**2 - SPHERE_RADIUS**2)
        jj, ii = np.mgrid[0:h, 0:w]
        disc = (ii + 0.5 - uv_c[0]) ** 2 + (jj + 0.5 - uv_c[1]) ** 2 <= r_px**2
        image = np.zeros((h, w, 3), np.uint8)
        image[..., :] = (30, 40, 50)
        image[disc] = (20, 40, 200)
        uv_m, _ = project_cv(c2w, K, MARKER)
        # an anti-aliased 4x4 px square: each pixel's red weight is its exact overlap with the square,
        # so the weighted centroid of the marker is its projection (no rounding to whole pixels)
        ox = np.clip(np.minimum(ii + 1, uv_m[0] + 2) - np.maximum(ii, uv_m[0] - 2), 0, 1)
        oy = np.clip(np.minimum(jj + 1, uv_m[1] + 2) - np.maximum(jj, uv_m[1] - 2), 0, 1)
        wgt = (ox * oy * disc)[..., None]
        image[:] = np.round(wgt * np.array([255, 40, 200]) + (1 - wgt) * image).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8) if empty_masks else (disc * 255).astype(np.uint8)
        frames.append(FixtureFrame(image, mask, c2w, K, fmt or ("ndc_norm_image_bounds", "ndc_isotropic")[i % 2]))
    return FixtureSequence(name, frames, quality)


def project_cv(c2w: np.ndarray, K: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, float]:
    p = np.linalg.inv(c2w) @ np.append(X, 1.0)
    return np.array([K[0] * p[0] / p[2] + K[2], K[1] * p[1] / p[2] + K[3]]), float(p[2])


def sphere_category(root: Path, category: str = "hydrant", seed: int = 0, **seq_kwargs) -> Path:
    """Five sphere sequences: 3 train, 1 val, 1 test, plus one low-quality train sequence."""
    rng = np.random.default_rng(seed)
    seqs = [sphere_sequence(f"{100 + i}_seq", rng, **seq_kwargs) for i in range(5)]
    seqs.append(sphere_sequence("999_lowq", rng, quality=0.2, **seq_kwargs))
    splits = {"train": ["100_seq", "101_seq", "102_seq", "999_lowq"], "val": ["103_seq"], "test": ["104_seq"]}
    return write_category(root, category, seqs, {"fewview_dev": splits})


# ------------------------------------------------------------------------------------------ mesh scenes
def mesh_category(root: Path, category: str = "chairco3d", num_sequences: int = 6, num_frames: int = 5) -> Path:
    """Synthetic chairs rendered with the project's renderer, placed in a scaled, shifted world frame.

    Each sequence's world is ``X_world = 2.5 R_z X_canonical + offset`` (a CO3D-like arbitrary frame),
    images are 48x64 (H x W), written with alternating intrinsics formats.
    """
    from featurenerf_ns.synthetic.render import ObjectRenderer, sample_poses
    from featurenerf_ns.synthetic.shapes import make_object

    rng = np.random.default_rng(1)
    seqs = []
    h, w = 48, 64
    for s in range(num_sequences):
        obj = make_object("chair", rng)
        renderer = ObjectRenderer(obj)
        poses = sample_poses(rng, num_frames)
        ang = rng.uniform(-0.5, 0.5)
        Rz = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
        M = np.eye(4)
        M[:3, :3] = 2.5 * Rz
        M[:3, 3] = rng.uniform(-1, 1, 3)
        frames = []
        for i, c2w in enumerate(poses):
            view = renderer.render(c2w, w, h, CAMERA_ANGLE_X, supersample=1)
            f = focal_from_fov(CAMERA_ANGLE_X, w)
            # the renderer's principal point (W/2, H/2) is in the authors' convention: +0.5 continuous
            K = np.array([f, f, w / 2 + 0.5, h / 2 + 0.5])
            c2w_world = M @ c2w
            c2w_world[:3, :3] /= 2.5  # keep a rotation: the scale lives in the positions only
            frames.append(
                FixtureFrame(
                    view.rgba[..., :3].copy(),
                    (view.rgba[..., 3] > 127).astype(np.uint8) * 255,
                    c2w_world,
                    K,
                    ("ndc_norm_image_bounds", "ndc_isotropic")[i % 2],
                )
            )
        seqs.append(FixtureSequence(f"{s:03d}_chair", frames, 1.0))
    names = [q.name for q in seqs]
    splits = {"train": names[:-2], "val": names[-2:-1], "test": names[-1:]}
    return write_category(root, category, seqs, {"fewview_dev": splits}, image_ext=".png")
