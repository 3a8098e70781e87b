"""featurenerf-export {pointcloud,mesh,orbit}: a trained FeatureNeRF's 3D semantic field of one source, as files.

Examples::

    featurenerf-export pointcloud --load-config outputs/chair/featurenerf/RUN/config.yml --image my_chair.png
    featurenerf-export mesh --load-config RUN/config.yml --object OBJ_ID --reference REF_ID --colors labels
    featurenerf-export orbit --load-config RUN/config.yml --image photo.jpg --mask mask.png --num-views 36

Outputs go to ``<run>/exports/<source>/`` (``--output-dir`` to change): ``pointcloud.ply`` + ``pointcloud.npz``,
``mesh.ply`` + ``mesh.glb``, ``orbit/frame_*.png`` + ``orbit.mp4`` (or ``.gif``), and ``parts.json`` (label names)
when a ``--reference`` gives part labels. Every file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.export.files import atomic_folder, write_glb, write_ply, write_png, write_video
from featurenerf_ns.export.orbit import Panel, orbit_frames
from featurenerf_ns.export.reference import PartReference, load_reference
from featurenerf_ns.export.source import EncodedSource, SourceConfig, encode_source
from featurenerf_ns.export.surface import (
    FieldAttributes,
    Surface,
    field_attributes,
    object_surface,
    sample_surface,
)
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.utils.errors import report_user_errors
from featurenerf_ns.utils.io import UserError, check_writable, write_json, write_npz

ColorKind = Literal["rgb", "pca", "labels"]


@dataclass
class ExportConfig:
    """Options shared by every export."""

    load_config: Path
    """config.yml of a trained run (ns-train's outputs/<category>/<method>/<time>/config.yml)."""
    source: tyro.conf.OmitArgPrefixes[SourceConfig] = field(default_factory=SourceConfig)
    """What to encode."""
    output_dir: Path | None = None
    """Folder of the exported files; default <run>/exports/<source name>/."""
    reference: str | None = None
    """An annotated dataset object whose part labels are transferred (nearest neighbour in v_NeRF space)."""
    reference_split: Literal["train", "val", "test"] = "test"
    """Split of --reference."""
    reference_view: int = 0
    """View that encodes --reference (its 3D part points are queried from it; else its 2D part map is used)."""
    device: str | None = None
    """Torch device; default the run's (cuda when available)."""

    def semantic_outputs(self) -> list[str]:
        """The asked-for outputs that need a distilled feature head (e.g. ``--colors pca``)."""
        return ["--reference (part labels)"] if self.reference is not None else []

    def check(self) -> None:
        """One-line errors for options that cannot work, before anything is loaded."""
        self.source.check()

    def main(self) -> None:
        self.check()
        photo = self.source.read_photo()
        folder = self.output_dir or self.load_config.parent / "exports" / self.source.name
        check_writable(folder)
        tf = TrainedFeatureNeRF.load(self.load_config, device=self.device)
        semantic = self.semantic_outputs()
        if semantic and tf.model.feature_dim == 0:
            raise UserError(
                f"{self.load_config}: this run has no distilled feature head (feature_dim 0, pixelNeRF's network), so "
                f"its v_NeRF carries no semantics for {', '.join(semantic)}: export rgb only or use a FeatureNeRF run"
            )
        source = encode_source(tf, self.source, photo)
        reference = None
        if self.reference is not None:
            reference = load_reference(tf, self.reference_split, self.reference, self.reference_view)
        for path in self.export(tf, source, reference, folder):
            CONSOLE.print(f"[bold green]wrote[/bold green] {path}")
        if reference is not None:
            names = {"0": "background", **{str(i + 1): n for i, n in enumerate(reference.part_names)}}
            write_json(folder / "parts.json", {"reference": reference.obj_id, "labels": names})

    def export(
        self, tf: TrainedFeatureNeRF, source: EncodedSource, reference: PartReference | None, folder: Path
    ) -> list[Path]:
        """Write this export's files; return their paths."""
        raise NotImplementedError


@dataclass
class SurfaceExportConfig(ExportConfig):
    """Options of the exports made from the density's iso-surface."""

    resolution: int = 128
    """Density samples along the longest side of the object's box (marching-cubes grid)."""
    level: float | None = None
    """Density of the iso-surface; default the density at which rays of views around the object become half
    opaque (median over rays: where the renders see the surface; printed)."""
    colors: ColorKind = "rgb"
    """Vertex colours: the field's colour seen from outside, PCA of v_NeRF, or transferred part labels."""

    def semantic_outputs(self) -> list[str]:
        return super().semantic_outputs() + ([f"--colors {self.colors}"] if self.colors != "rgb" else [])

    def check(self) -> None:
        super().check()
        if self.colors == "labels" and self.reference is None:
            raise UserError("--colors labels needs --reference OBJ_ID (an annotated object to transfer parts from)")

    def surface(self, tf: TrainedFeatureNeRF, source: EncodedSource) -> Surface:
        """Marching cubes of the source's density (see :mod:`featurenerf_ns.export.surface`)."""
        surface, level = object_surface(tf, source.cond, source.camera, self.resolution, self.level)
        CONSOLE.print(f"surface at density {level:.4g}: {len(surface.vertices)} vertices, {len(surface.faces)} faces")
        return surface

    def attributes(
        self,
        tf: TrainedFeatureNeRF,
        source: EncodedSource,
        reference: PartReference | None,
        points: np.ndarray,
        normals: np.ndarray,
    ) -> tuple[FieldAttributes, np.ndarray, dict[str, np.ndarray]]:
        """The field's attributes at the points, the vertex colours (``--colors``) and the PLY's scalar properties:
        ``rgb_*`` and ``pca_*`` (the latter with a feature head) colour channels and ``label``."""
        attrs = field_attributes(tf, source.cond, points, normals, tf.model.feature_dim > 0, reference)
        num_parts = len(reference.part_names) if reference is not None else 0
        properties: dict[str, np.ndarray] = {}
        for kind, colors in (("rgb", attrs.rgb), ("pca", attrs.pca)):
            if colors is not None:
                properties.update({f"{kind}_{c}": colors[:, i] for i, c in enumerate(("red", "green", "blue"))})
        if attrs.labels is not None:
            properties["label"] = attrs.labels.astype(np.uint8)
        return attrs, attrs.colors(self.colors, num_parts), properties


@dataclass
class PointCloudConfig(SurfaceExportConfig):
    """Surface points of the object (the marching-cubes surface sampled uniformly by area) with the field's colour,
    v_NeRF PCA colour and part labels: pointcloud.ply, plus pointcloud.npz (points, normals, colours, labels and
    the v_NeRF vectors in float16)."""

    num_points: int = 50000
    """Points sampled on the surface."""

    def export(self, tf, source, reference, folder):
        surface = self.surface(tf, source)
        points, normals = sample_surface(surface, self.num_points)
        attrs, colors, properties = self.attributes(tf, source, reference, points, normals)
        ply, npz = folder / "pointcloud.ply", folder / "pointcloud.npz"
        write_ply(ply, points, colors, normals=normals, attributes=properties)
        arrays = {"points": points, "normals": normals, "rgb": attrs.rgb, "v_nerf": attrs.v_nerf.half().numpy()}
        if attrs.pca is not None:
            arrays["pca"] = attrs.pca
        if attrs.labels is not None:
            arrays["labels"] = attrs.labels.astype(np.int64)
            arrays["part_names"] = np.asarray(reference.part_names)  # type: ignore[union-attr]
        write_npz(npz, compressed=True, **arrays)
        return [ply, npz]


@dataclass
class MeshConfig(SurfaceExportConfig):
    """Marching-cubes mesh of the density with vertex colours (--colors) and, with --reference, a per-vertex
    ``label`` property: mesh.ply (all vertex properties) and mesh.glb (geometry and vertex colours only: glTF has no
    custom vertex attributes)."""

    def export(self, tf, source, reference, folder):
        surface = self.surface(tf, source)
        _, colors, properties = self.attributes(tf, source, reference, surface.vertices, surface.normals)
        ply, glb = folder / "mesh.ply", folder / "mesh.glb"
        write_ply(ply, surface.vertices, colors, faces=surface.faces, normals=surface.normals, attributes=properties)
        write_glb(glb, surface.vertices, surface.faces, colors)
        return [ply, glb]


@dataclass
class OrbitConfig(ExportConfig):
    """Views on a circle around the object (the source camera's distance and intrinsics), each frame the chosen
    panels side by side: orbit/frame_0000.png ... and orbit.mp4 (or orbit.gif)."""

    num_views: int = 24
    """Frames around the object."""
    orbit_elevation: float | None = None
    """Elevation of the orbit in degrees; default the source camera's."""
    panels: tuple[Panel, ...] | None = None
    """Side-by-side renders of each frame; default rgb, then pca (with a feature head), then labels (with
    --reference)."""
    scale: float = 1.0
    """Frame size relative to the source camera's image."""
    fps: float = 12.0
    """Frames per second of the video."""
    format: Literal["mp4", "gif"] = "mp4"
    """Video format."""

    def semantic_outputs(self) -> list[str]:
        asked = [p for p in (self.panels or ()) if p != "rgb"]
        return super().semantic_outputs() + ([f"--panels {' '.join(asked)}"] if asked else [])

    def check(self) -> None:
        super().check()
        if self.panels is not None and "labels" in self.panels and self.reference is None:
            raise UserError("--panels labels needs --reference OBJ_ID (an annotated object to transfer parts from)")
        if self.panels is not None and not self.panels:
            raise UserError("--panels needs at least one of rgb, pca, labels")
        if not self.fps > 0:
            raise UserError(f"--fps must be positive, got {self.fps}")

    def export(self, tf, source, reference, folder):
        panels = self.panels
        if panels is None:
            panels = ("rgb",) + (("pca",) if tf.model.feature_dim > 0 else ()) + (("labels",) if reference else ())
        frames = orbit_frames(tf, source, self.num_views, self.orbit_elevation, panels, reference, self.scale)
        frames_dir, video = folder / "orbit", folder / f"orbit.{self.format}"
        with atomic_folder(frames_dir) as tmp:
            for i, frame in enumerate(frames):
                write_png(tmp / f"frame_{i:04d}.png", frame)
        write_video(video, frames, self.fps)
        return [frames_dir, video]


_DESCRIPTIONS = {
    "pointcloud": "Surface points with field colour, v_NeRF PCA colour, part labels (PLY + NPZ with v_NeRF).",
    "mesh": "Marching-cubes mesh with vertex colours and part labels (PLY + GLB).",
    "orbit": "Frames around the object: rgb | feature PCA | labels side by side (PNGs + MP4/GIF).",
}
Commands = (
    Annotated[PointCloudConfig, tyro.conf.subcommand("pointcloud", description=_DESCRIPTIONS["pointcloud"])]
    | Annotated[MeshConfig, tyro.conf.subcommand("mesh", description=_DESCRIPTIONS["mesh"])]
    | Annotated[OrbitConfig, tyro.conf.subcommand("orbit", description=_DESCRIPTIONS["orbit"])]
)


@report_user_errors
def entrypoint(args: list[str] | None = None) -> None:
    """``featurenerf-export`` console script (``args``: the command line, default ``sys.argv``)."""
    tyro.extras.set_accent_color("bright_yellow")
    tyro.cli(Commands, args=args).main()


if __name__ == "__main__":
    entrypoint()
