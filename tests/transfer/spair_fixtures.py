"""A tiny SPair-71k in the real format: synthetic chairs photographed on a textured background.

``JPEGImages/<cat>/<name>.jpg``, ``ImageAnnotation/<cat>/<name>.json``, ``Segmentation/<cat>/<name>.png``,
``PairAnnotation/<split>/<id>-<src>-<trg>:<cat>.json`` and ``Layout/large/<split>.txt``. Keypoints are
the objects' 3D keypoints projected (pixel-index coordinates) where visible; pair keypoints are the ids
visible in both images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_spair(root: Path, category: str = "chair", num_images: int = 4, seed: int = 0) -> Path:
    from featurenerf_ns.geometry import focal_from_fov, look_at_opencv, project, sphere_direction
    from featurenerf_ns.synthetic.render import ObjectRenderer
    from featurenerf_ns.synthetic.shapes import make_object

    rng = np.random.default_rng(seed)
    images = {}
    for n in range(num_images):
        obj = make_object("chair", rng)
        renderer = ObjectRenderer(obj)
        h, w = int(rng.integers(70, 90)), int(rng.integers(90, 120))
        az, el = rng.uniform(-0.8, 0.8), rng.uniform(0.2, 0.6)
        dist = rng.uniform(1.8, 2.4)
        eye = dist * sphere_direction(az, el)
        c2w = look_at_opencv(eye, target=rng.uniform(-0.1, 0.1, 3))
        fov = 0.9
        view = renderer.render(c2w, w, h, fov, supersample=2)
        alpha = view.rgba[..., 3:].astype(np.float32) / 255
        bg = rng.integers(90, 160, (h, w, 3)).astype(np.float32)
        rgb = view.rgba[..., :3].astype(np.float32) + (1 - alpha) * bg  # renders are premultiplied on black
        name = f"{n:06d}.jpg"
        (root / "JPEGImages" / category).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / "JPEGImages" / category / name, quality=95)
        fg = view.rgba[..., 3] > 127
        (root / "Segmentation" / category).mkdir(parents=True, exist_ok=True)
        Image.fromarray((fg * 9).astype(np.uint8)).save(root / "Segmentation" / category / f"{n:06d}.png")
        rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]
        uv, _ = project(obj.keypoints, c2w, focal_from_fov(fov, w), (h, w))
        vis = (
            renderer.visible(obj.keypoints, c2w)
            & (uv[:, 0] >= 0)
            & (uv[:, 0] <= w - 1)
            & (uv[:, 1] >= 0)
            & (uv[:, 1] <= h - 1)
        )
        kps = {int(i): (uv[k].tolist() if vis[k] else None) for k, i in enumerate(obj.keypoint_ids)}
        images[name] = {"hw": (h, w), "bbox": bbox, "kps": kps}
        (root / "ImageAnnotation" / category).mkdir(parents=True, exist_ok=True)
        (root / "ImageAnnotation" / category / f"{n:06d}.json").write_text(
            json.dumps(
                {
                    "filename": name,
                    "src_database": "synthetic",
                    "anno_db": "synthetic",
                    "image_width": w,
                    "image_height": h,
                    "image_depth": 3,
                    "category": category,
                    "pose": "unspecified",
                    "truncated": 0,
                    "occluded": 0,
                    "difficult": 0,
                    "bndbox": bbox,
                    "kps": {str(k): v for k, v in kps.items()},
                    "azimuth_id": 0,
                }
            )
        )
    names = sorted(images)
    (root / "PairAnnotation" / "test").mkdir(parents=True, exist_ok=True)
    (root / "Layout" / "large").mkdir(parents=True, exist_ok=True)
    layout = []
    pid = 0
    for a in names:
        for b in names:
            if a == b:
                continue
            ids = sorted(
                i for i, v in images[a]["kps"].items() if v is not None and images[b]["kps"].get(i) is not None
            )
            if not ids:
                continue
            pid += 1
            stem = f"{pid:06d}-{Path(a).stem}-{Path(b).stem}:{category}"
            ha, wa = images[a]["hw"]
            hb, wb = images[b]["hw"]
            pair = {
                "filename": stem,
                "src_imname": a,
                "trg_imname": b,
                "src_imsize": [wa, ha, 3],
                "trg_imsize": [wb, hb, 3],
                "src_bndbox": images[a]["bbox"],
                "trg_bndbox": images[b]["bbox"],
                "category": category,
                "src_pose": 0,
                "trg_pose": 0,
                "src_kps": [images[a]["kps"][i] for i in ids],
                "trg_kps": [images[b]["kps"][i] for i in ids],
                "mirror": 0,
                "viewpoint_variation": 1,
                "scale_variation": 0,
                "truncation": 0,
                "occlusion": 0,
                "kps_ids": [str(i) for i in ids],
            }
            (root / "PairAnnotation" / "test" / f"{stem}.json").write_text(json.dumps(pair))
            layout.append(stem)
    (root / "Layout" / "large" / "test.txt").write_text("\n".join(layout) + "\n")
    return root


def image_keypoints(root: Path, category: str, name: str) -> dict[int, list[float]]:
    ann = json.loads((root / "ImageAnnotation" / category / f"{Path(name).stem}.json").read_text())
    return {int(k): v for k, v in ann["kps"].items() if v is not None}
