"""What the panel draws over the rendered image: the transferred keypoints, the similarity query point, the source
camera as a frustum showing its image (viser scene nodes), and the parts' legend (markdown)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import viser.transforms as vtf
from jaxtyping import Float, Int
from torch import Tensor

from featurenerf_ns.utils.colors import label_palette, legend_markdown

if TYPE_CHECKING:
    import viser

    from featurenerf_ns.viewer.source import Source

SCENE_SCALE = 10.0
"""nerfstudio draws the scene in viser 10x larger than world units (VISER_NERFSTUDIO_SCALE_RATIO)."""
KEYPOINTS = "/featurenerf_keypoints"
KEYPOINT_LABELS = "/featurenerf_keypoint_labels"
QUERY = "/featurenerf_query"
SOURCE_CAMERA = "/featurenerf_source_camera"
SOURCE_CAMERA_COLOR = (255, 140, 0)
"""Orange, apart from the training cameras' dark frustums."""
SOURCE_CAMERA_SCALE = 0.15
"""Size of the drawn frustum (nerfstudio draws training cameras at 0.1)."""
NO_ANNOTATION_LEGEND = "*No annotated object in the data: labels and keypoints are unavailable.*"


def opencv_pose(c2w: Float[Tensor, "3 4"]) -> tuple[np.ndarray, np.ndarray]:
    """viser's pose (quaternion ``wxyz``, position in the scaled scene) of a nerfstudio (OpenGL) camera-to-world:
    viser's cameras look along +Z with +Y down, nerfstudio's along -Z with +Y up."""
    m = c2w.detach().cpu().double().numpy()
    rotation = vtf.SO3.from_matrix(m[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
    return rotation.wxyz, m[:3, 3] * SCENE_SCALE


class SceneOverlays:
    """Scene nodes of the panel in one viser scene (none before a viewer is attached)."""

    def __init__(self) -> None:
        self.scene: viser.SceneApi | None = None
        self._keypoint_handles: list = []
        self.source_frustum = None
        """viser handle of the source camera's frustum (None until a source is drawn)."""
        self.show_source = True

    def attach(self, scene: viser.SceneApi) -> None:
        self.scene = scene

    def draw_keypoints(self, positions: Float[Tensor, "K 3"] | None, ids: Int[Tensor, " K"] | None) -> None:
        """Replace the drawn keypoints with these (world units; None removes them), coloured and labelled by id."""
        if self.scene is None:
            return
        for handle in self._keypoint_handles:
            handle.remove()
        self._keypoint_handles = []
        if positions is None or ids is None:
            return
        pts = positions.cpu().numpy() * SCENE_SCALE
        colors = (label_palette(int(ids.max()) + 1)[ids + 1].numpy() * 255).astype(np.uint8)
        self._keypoint_handles.append(
            self.scene.add_point_cloud(KEYPOINTS, points=pts, colors=colors, point_size=0.15, point_shape="circle")
        )
        for p, i in zip(pts, ids.tolist(), strict=True):
            self._keypoint_handles.append(
                self.scene.add_label(f"{KEYPOINT_LABELS}/kp_{i}", text=f"kp {i}", position=tuple(p))
            )

    def draw_query(self, point: Float[Tensor, " 3"]) -> None:
        """A white ball at the similarity query point."""
        if self.scene is None:
            return
        p = tuple(float(x) * SCENE_SCALE for x in point.tolist())
        self.scene.add_icosphere(QUERY, radius=0.08, color=(255, 255, 255), position=p)

    def set_source_visible(self, visible: bool) -> None:
        self.show_source = visible
        if self.source_frustum is not None:
            self.source_frustum.visible = visible

    def draw_source(self, source: Source) -> None:
        """The source camera as a frustum showing the (first) source image, replacing the previous one."""
        if self.scene is None:
            return
        cam = source.camera
        wxyz, position = opencv_pose(cam.camera_to_worlds[0])
        image = (source.rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        self.source_frustum = self.scene.add_camera_frustum(
            SOURCE_CAMERA,
            fov=float(2 * torch.atan(cam.cy[0, 0] / cam.fy[0, 0])),
            aspect=float(cam.width[0, 0] / cam.height[0, 0]),
            scale=SOURCE_CAMERA_SCALE,
            color=SOURCE_CAMERA_COLOR,
            image=image,
            format="png",
            wxyz=wxyz,
            position=position,
            visible=self.show_source,
        )


def legend_text(part_names: Sequence[str], present: set[int] | None, has_part_map: bool = True) -> str:
    """The parts' legend (labels output): every part, or those the reference's part map has (``present``)."""
    if not has_part_map:
        return "*The reference has no 2D part map.*"
    return "**Parts** (labels output)  \n" + legend_markdown(part_names, label_palette(len(part_names)), present)
