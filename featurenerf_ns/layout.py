"""Paths of the authors' processed ShapeNet layout (and of what this project adds to it).

```
<root>/img/<synset>/<obj_id>/*.png          RGBA renders, sorted names = view order
<root>/camera/<synset>/<obj_id>.json        {"camera_angle_x", "frames": [{"file_path", "transform_matrix"}]}
<root>/kp_2d_anno/<synset>/<obj_id>.npz     labels: object array, per view (K,3) [x=col, y=row, kp_id]
<root>/kp_3d_anno/<synset>/<obj_id>.npz     labels: (K,4) [x,y,z,kp_id]; pts: (N,3) candidate points
<root>/part_2d_anno/<synset>/<obj_id>.npz   labels: (NV,H,W) int, 0 = background
<root>/part_3d_anno/<synset>/<obj_id>.npz   pts: (N,3); labels: (N,)
<root>/<teacher>/<synset>/<obj_id>.npz      feats: (NV,D,h,w), e.g. teacher = dino_feat_256
<root>/mesh/<synset>/<obj_id>.ply           (generated data only) mesh with per-face part labels
<root>/splits/<synset>.json                 train/val/test, cross_inst_pairs, cross_view_pairs
```
``transform_matrix`` is an OpenCV camera-to-world matrix (x right, y down, z forward); the
authors' loader right-multiplies it by ``diag(1, -1, -1, 1)`` to get pixelNeRF's (OpenGL) pose.
Pixel coordinates follow pixelNeRF: pixel ``(row j, col i)`` is at image point ``(i, j)`` and the
principal point is ``(W/2, H/2)``, so ``u = f X/Z + W/2`` gives a column index directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
"""The object lists of a split file (and of CO3D's set lists); ``ns-eval`` and the viewer use ``test``."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files of a render folder (matched case-insensitively); their sorted names are the view order."""
ANNOTATION_SUFFIX = ".npz"
"""Annotation files and the authors' teacher features."""
MESH_SUFFIX = ".ply"
"""Labelled meshes of generated data."""
SYNTHETIC_TEACHER_FOLDER = "synth_feat_32"
"""Folder of the synthetic teacher's features (see :mod:`featurenerf_ns.synthetic.teacher`)."""
DINO_TEACHER_FOLDER = "dino_feat_256"
"""Folder of the authors' DINO features."""
DINOV2_TEACHER_FOLDER = "dinov2_feat_448"
"""Folder of the DINOv2 teacher's features (``featurenerf-teacher dinov2``: ViT-S/14 at 448 px, 384 x 32 x 32)."""


@dataclass(frozen=True)
class CategoryLayout:
    """File locations of one category under a data root in the authors' layout."""

    root: Path
    synset: str

    def image_dir(self, obj_id: str) -> Path:
        return self.root / "img" / self.synset / obj_id

    def camera_json(self, obj_id: str) -> Path:
        return self.root / "camera" / self.synset / f"{obj_id}.json"

    def kp_2d(self, obj_id: str) -> Path:
        return self.root / "kp_2d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def kp_3d(self, obj_id: str) -> Path:
        return self.root / "kp_3d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def part_2d(self, obj_id: str) -> Path:
        return self.root / "part_2d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def part_3d(self, obj_id: str) -> Path:
        return self.root / "part_3d_anno" / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def teacher(self, folder: str, obj_id: str) -> Path:
        return self.root / folder / self.synset / f"{obj_id}{ANNOTATION_SUFFIX}"

    def mesh(self, obj_id: str) -> Path:
        return self.root / "mesh" / self.synset / f"{obj_id}{MESH_SUFFIX}"

    def split_file(self) -> Path:
        return self.root / "splits" / f"{self.synset}.json"

    def split_file_candidates(self) -> tuple[Path, Path]:
        """Where a split file may be, first match wins: ours, then the authors' repository's ``assets/splits``."""
        return self.split_file(), self.root / "assets" / "splits" / f"{self.synset}.json"
