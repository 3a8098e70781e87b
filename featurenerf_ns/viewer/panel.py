"""The "FeatureNeRF" panel of nerfstudio's viser viewer.

A generalizable NeRF renders nothing until it is told which image conditions it, so the panel
first picks the *source*: an object of the eval split (``test`` under ``ns-viewer``) and its source
view(s), or any RGB/RGBA image file (encoded with the camera of view 0 of the first eval object,
i.e. assumed to be seen from the dataset's usual viewpoint). The source is encoded once when it
changes and cached on the model as :attr:`FeatureNeRFModel.default_conditioning`.

Outputs (nerfstudio's "Output type" dropdown lists them, ``rgb`` first):

* ``rgb``, ``depth`` (``[H, W, 1]``, expected depth of the surface), ``accumulation``;
* ``feature_pca``: v_NeRF through a 3-component PCA fitted once per source object on the
  foreground of the source view's render, with fixed colour ranges (no flicker; "Refresh PCA"
  refits on the current view);
* ``labels``: parts transferred from an annotated reference object (nearest neighbour in
  L2-normalised v_NeRF space to the labelled foreground pixels of one of its views);
* ``similarity``: cosine similarity of v_NeRF to a picked 3D point (turbo colour map).

Only the outputs selected in the viewer are computed (v_NeRF compositing, the expensive part, is
skipped for ``rgb``/``depth``/``accumulation``); the others are returned as black images so the
dropdown keeps listing them. Transferred 3D keypoints of the reference object are drawn as labelled
markers in the scene.

Wiring: :class:`FeatureNeRFViewerPanel` is an ``nn.Module`` (without parameters) built by :func:`make_panel`, which
the package registers under the ``featurenerf_ns.viewer`` entry points; the pipeline's ``FeatureNeRF`` property builds
it when nerfstudio's viewer looks for elements, which finds them there (attribute names set their order: hence
the letter prefixes). It hangs :meth:`FeatureNeRFViewerPanel.render_outputs` on the model's
``camera_renderer`` hook, which ``FeatureNeRFModel.get_outputs_for_camera`` calls. Its
:class:`PanelViewerControl` (a ``ViewerControl``) gets the running viewer: viser scene, clicks,
the lock shared with training, the selected output, the run directory.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.colormaps import ColormapOptions, apply_colormap
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerCheckbox,
    ViewerClick,
    ViewerControl,
    ViewerDropdown,
    ViewerElement,
    ViewerNumber,
    ViewerSlider,
    ViewerText,
)
from PIL import Image
from torch import Tensor, nn

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.data.images import load_view
from featurenerf_ns.dataparsers.records import ObjectRecord
from featurenerf_ns.geometry import intrinsics_of
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.utils.features import PCABasis
from featurenerf_ns.utils.io import DataError
from featurenerf_ns.viewer.colors import (
    colorize_labels,
    cosine_similarity_map,
    label_palette,
    legend_markdown,
    png_data_url,
    similarity_colors,
    transfer_part_labels,
)
from featurenerf_ns.viewer.render import (
    MIN_ACCUMULATION,
    orbit_cameras,
    render_camera_anywhere,
    surface_point,
    surface_points,
)

if TYPE_CHECKING:
    import viser

    from featurenerf_ns.model.featurenerf import FeatureNeRFModel

OUTPUTS = ("rgb", "depth", "accumulation", "feature_pca", "labels", "similarity")
"""Keys of the viewer's outputs, in dropdown order."""
FEATURE_OUTPUTS = frozenset({"feature_pca", "labels", "similarity"})
"""Outputs that need v_NeRF rendered."""
IMAGE_FILE = "image file (path below)"
"""Source option that encodes the image file typed in the panel."""
NO_REFERENCE = "(no annotated object)"
SCENE_SCALE = 10.0
"""nerfstudio draws the scene in viser 10x larger than world units (VISER_NERFSTUDIO_SCALE_RATIO)."""
MAX_OPTIONS = 200
"""Objects listed per dropdown (the first ones of each split)."""
ORBIT_VIEWS = 24
SIMILARITY_FLOOR = 0.5
"""Default cosine similarity at turbo's blue end: v_NeRF vectors of one object are mostly positively
correlated, so mapping [-1, 1] would paint every pixel of the object the same warm colour."""


class ViewerMarkdown(ViewerElement[str]):
    """Markdown (with images as ``data:`` URLs) among the panel's elements; ``content`` may be set any time."""

    def __init__(self, name: str, content: str = "") -> None:
        super().__init__(name)
        self._content = content

    def _create_gui_handle(self, viser_server: viser.ViserServer) -> None:
        self.gui_handle = viser_server.gui.add_markdown(self._content)  # type: ignore[assignment]

    def install(self, viser_server: viser.ViserServer) -> None:
        self._create_gui_handle(viser_server)

    @property
    def content(self) -> str:
        return self._content

    @content.setter
    def content(self, value: str) -> None:
        self._content = value
        if self.gui_handle is not None:
            self.gui_handle.content = value  # type: ignore[union-attr]


@dataclass
class Source:
    """The image(s) conditioning the field, and the camera they were seen from."""

    key: tuple
    label: str
    cameras: Cameras
    """One camera per source view (on the model's device)."""
    rgb: Tensor
    """``(S, H, W, 3)`` in [0, 1], composited on the dataset's background."""
    mask: Tensor
    """``(S, H, W)`` bool foreground of the images (alpha, or non-background pixels of RGB files)."""


@dataclass
class Reference:
    """An annotated object whose parts and keypoints are transferred to the source object."""

    key: tuple
    feats: Tensor
    """``(N, C)`` rendered v_NeRF of the labelled foreground pixels of the reference view."""
    labels: Tensor
    """``(N,)`` their part labels (> 0)."""
    kp_ids: Tensor | None
    """``(K,)`` keypoint ids, or None without a 3D keypoint file."""
    kp_feats: Tensor | None
    """``(K, C)`` v_NeRF queried at the reference's 3D keypoints."""


class PanelViewerControl(ViewerControl):
    """Hands the running viewer to the panel (nerfstudio calls ``_setup`` once the GUI is built)."""

    def __init__(self, panel: FeatureNeRFViewerPanel) -> None:
        self._panel = weakref.ref(panel)

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        panel = self._panel()
        if panel is not None:
            panel.attach_viewer(viewer)


class FeatureNeRFViewerPanel(nn.Module):
    """Viewer panel of FeatureNeRF (see the module docstring). Holds no parameters."""

    def __init__(self, pipeline: Any) -> None:
        super().__init__()
        # Weak references: as attributes of this nn.Module, the model or datamanager would become its
        # submodules (duplicate checkpoint keys).
        self._pipeline_ref = weakref.ref(pipeline)
        dm = pipeline.datamanager
        self._eval_split = "val" if dm.test_mode == "val" else "test"
        meta = dm.train_dataparser_outputs.metadata
        self._image_hw: tuple[int, int] = tuple(meta["image_size"])  # type: ignore[assignment]
        try:
            self._part_names: tuple[str, ...] = resolve_category(str(meta.get("category", ""))).parts
        except ValueError:
            self._part_names = ()
        self._splits = {
            self._eval_split: (dm.eval_dataparser_outputs.cameras, dm.eval_dataparser_outputs.metadata["objects"]),
            "train": (dm.train_dataparser_outputs.cameras, dm.train_dataparser_outputs.metadata["objects"]),
        }
        eval_objects = self._splits[self._eval_split][1]
        source_options = [f"{self._eval_split}/{r.obj_id}" for r in eval_objects[:MAX_OPTIONS]] + [IMAGE_FILE]
        ref_options = [
            f"{split}/{r.obj_id}"
            for split in (self._eval_split, "train")
            for r in self._splits[split][1][:MAX_OPTIONS]
            if r.part_2d_path is not None or r.kp_3d_path is not None
        ] or [NO_REFERENCE]

        # nerfstudio lists a module's elements sorted by attribute name: the letter prefixes fix the order.
        self.a_source_object = ViewerDropdown(
            "Source object", source_options[0], source_options, cb_hook=self._on_source_change,
            hint="Object whose source view(s) condition the field (eval split), or an image file",
        )  # fmt: skip
        self.b_image_file = ViewerText(
            "Image file", "", cb_hook=self._on_image_file,
            hint="Any RGB/RGBA image (encoded with the camera of view 0 of the first eval object)",
        )  # fmt: skip
        self.c_source_views = ViewerText(
            "Source views", "0", cb_hook=self._on_source_change,
            hint="Comma-separated view indices of the source object, e.g. 0 or 0,2",
        )  # fmt: skip
        self.d_source_image = ViewerMarkdown("Source image", "*source not encoded yet*")
        self.e_view_source = ViewerButton("View from source", cb_hook=lambda _: self.move_clients_to_source())
        self.f_refresh_pca = ViewerButton("Refresh PCA", cb_hook=self._on_refresh_pca)
        self.g_reference_object = ViewerDropdown(
            "Reference object", ref_options[0], ref_options, cb_hook=self._on_reference_change,
            hint="Annotated object whose parts (labels output) and 3D keypoints are transferred",
        )  # fmt: skip
        self.h_reference_view = ViewerNumber(
            "Reference view", 0, cb_hook=self._on_reference_change, hint="View of the reference whose part map is used"
        )
        self.ha_min_opacity = ViewerSlider(
            "Label min opacity", MIN_ACCUMULATION, 0.05, 0.95, 0.05,
            hint="Rendered pixels (and clicks) with less opacity are background for labels",
        )  # fmt: skip
        self.i_legend = ViewerMarkdown("Legend", "")
        self.j_show_keypoints = ViewerCheckbox(
            "Show keypoints", True, cb_hook=lambda _: self._invalidate_keypoints(),
            hint="Draw the reference's 3D keypoints transferred to the source object",
        )  # fmt: skip
        self.k_pick_point = ViewerButton("Pick similarity point", cb_hook=lambda _: self.start_picking())
        self.l_similarity_min = ViewerSlider(
            "Similarity min", SIMILARITY_FLOOR, -1.0, 0.95, 0.05,
            hint="Cosine similarity shown at the blue end of turbo (1 = the picked point is the red end)",
        )  # fmt: skip
        self.m_render_views = ViewerButton("Render views", cb_hook=lambda _: self.render_orbit_async())
        self.n_status = ViewerMarkdown("Status", "")
        self.viewer_control = PanelViewerControl(self)

        self._viewer = None
        self._source: Source | None = None
        self._encoded_step: int | None = None
        self._source_render: dict[str, Tensor] | None = None
        self._pca: PCABasis | None = None
        self._reference: Reference | None = None
        self._query: tuple[Tensor, Tensor] | None = None
        self._keypoints_drawn: tuple | None = None
        self._keypoint_handles: list = []
        self._failed_key: tuple | None = None
        self._orbit_thread: threading.Thread | None = None
        self.encode_count = 0
        """Number of encodings so far (tests check that a change encodes once)."""
        self.last_orbit_dir: Path | None = None
        """Folder of the last "Render views" export."""
        self._model.camera_renderer = self.render_outputs
        self._update_legend()

    # ------------------------------------------------------------------------------------- access
    @property
    def _model(self) -> FeatureNeRFModel:
        pipeline = self._pipeline_ref()
        if pipeline is None:
            raise RuntimeError("the pipeline of this viewer panel is gone")
        return pipeline.model

    @property
    def _datamanager(self):
        return self._pipeline_ref().datamanager  # type: ignore[union-attr]

    def attach_viewer(self, viewer) -> None:
        """Called once nerfstudio's viewer is built: camera on connect, CPU resolution, legend."""
        self._viewer = viewer
        if self._model.device.type == "cpu":
            # nerfstudio renders at "Max res" once the camera stops (512 by default) and at a resolution
            # sized to its measured rays/s while it moves. On CPU, 4x the training resolution shows all
            # the model resolves and keeps a refined frame within about a second for small models.
            viewer.control_panel._max_res.value = int(min(512, max(64, 4 * max(self._image_hw))))
        viewer.viser_server.on_client_connect(lambda client: self._on_connect(client))
        self._update_legend()

    def _lock(self):
        lock = getattr(self._viewer, "train_lock", None)
        return lock if lock is not None else contextlib.nullcontext()

    def _status(self, text: str) -> None:
        self.n_status.content = text

    def requested_outputs(self) -> frozenset[str]:
        """Outputs shown in the viewer (main and split view); every output without a viewer."""
        if self._viewer is None:
            return frozenset(OUTPUTS)
        cp = self._viewer.control_panel
        wanted = {cp.output_render}
        if cp.split:
            wanted.add(cp.split_output_render)
        return frozenset(wanted)

    # ------------------------------------------------------------------------------------- callbacks
    def _on_source_change(self, _=None) -> None:
        # The work happens once, in the render that nerfstudio triggers after every panel callback.
        self._failed_key = None

    def _on_image_file(self, _=None) -> None:
        if self.b_image_file.value.strip() and self.a_source_object.value != IMAGE_FILE:
            self.a_source_object.value = IMAGE_FILE
        self._failed_key = None

    def _on_reference_change(self, _=None) -> None:
        self._reference = None
        self._invalidate_keypoints()
        self._update_legend()

    def _on_refresh_pca(self, _=None) -> None:
        """Refit the PCA on the current view of the first client (the source view without a viewer)."""
        try:
            self.sync()
            camera = self._current_camera()
            if camera is None:
                self._pca = self._fit_pca_on_source()
                return
            out = render_camera_anywhere(self._model, self._cond(), camera, frozenset({"v_nerf"}))
            fg = out["accumulation"][..., 0] >= MIN_ACCUMULATION
            if not bool(fg.any()):
                self._status("Refresh PCA: no object in the current view; basis unchanged.")
                return
            self._pca = PCABasis.fit(out["v_nerf"][fg])
            self._status("PCA basis refitted on the current view.")
        except (DataError, ValueError) as e:
            self._status(f"**Error:** {e}")

    def _current_camera(self) -> Cameras | None:
        if self._viewer is None or not self._viewer.viser_server.get_clients():
            return None
        h = 2 * max(self._image_hw)
        client = next(iter(self._viewer.viser_server.get_clients().values()))
        return self.viewer_control.get_camera(h, int(h * client.camera.aspect))

    # ------------------------------------------------------------------------------------- source
    def _selected_source(self) -> tuple:
        choice = self.a_source_object.value
        if choice == IMAGE_FILE:
            return ("file", self.b_image_file.value.strip())
        views = self._parse_views(self.c_source_views.value)
        return ("object", choice, views)

    @staticmethod
    def _parse_views(text: str) -> tuple[int, ...]:
        try:
            views = tuple(int(v) for v in text.replace(";", ",").split(",") if v.strip())
        except ValueError:
            raise ValueError(f"source views must be comma-separated integers, got {text!r}") from None
        if not views:
            raise ValueError("give at least one source view")
        return views

    def _record(self, choice: str) -> tuple[Cameras, ObjectRecord]:
        split, _, obj_id = choice.partition("/")
        cameras, records = self._splits[split]
        for r in records:
            if r.obj_id == obj_id:
                return cameras, r
        raise ValueError(f"object {obj_id!r} is not in the {split} split")

    def _load_source(self, key: tuple) -> Source:
        dm = self._datamanager
        device = self._model.device
        if key[0] == "file":
            path = Path(key[1]).expanduser()
            if not key[1]:
                raise ValueError("type the path of an image file in 'Image file'")
            if not path.is_file():
                raise DataError(path, "image file not found")
            try:
                rgba = load_view(path, self._image_hw, dm.white_background)
            except (OSError, ValueError) as e:
                raise DataError(path, f"not a readable image ({e})") from None
            cameras, rec = self._splits[self._eval_split][0], self._splits[self._eval_split][1][0]
            i = rec.camera_index(0)
            rgba_t = torch.from_numpy(rgba)[None]
            return Source(key, f"`{path.name}`", cameras[i : i + 1].to(device), rgba_t[..., :3], rgba_t[..., 3] > 0.5)
        _, choice, views = key
        cameras, rec = self._record(choice)
        for v in views:
            if not 0 <= v < rec.num_views:
                raise ValueError(f"{rec.obj_id} has views 0..{rec.num_views - 1}, asked for {v}")
        rgba = dm.load_views(rec, list(views), with_teacher=False).rgba
        idx = torch.tensor([rec.camera_index(v) for v in views])
        label = f"{choice}, view{'s' if len(views) > 1 else ''} {', '.join(map(str, views))}"
        return Source(key, label, cameras[idx].to(device), rgba[..., :3], rgba[..., 3] > 0.5)

    def _encode(self, source: Source) -> Conditioning:
        cams = source.cameras
        intr = intrinsics_of(cams)
        images = source.rgb.permute(0, 3, 1, 2)[None].to(self._model.device)
        self.encode_count += 1
        with torch.no_grad():
            return self._model.encode(images, cams.camera_to_worlds[None], intr[None])

    def _training_step(self) -> int | None:
        if self._viewer is None or getattr(self._viewer, "trainer", None) is None:
            return None
        return int(self._viewer.step)

    def sync(self) -> None:
        """Encode the selected source if it changed (or training moved on); once per change.

        On bad input (unreadable image, wrong view index) the previous source stays and the panel's
        status says why; the very first source falls back to view 0 of the first eval object.
        """
        fallback = ("object", self.a_source_object.options[0], (0,))
        try:
            key = self._selected_source()
        except ValueError as e:
            self._status(f"**Error:** {e}")
            key = self._source.key if self._source is not None else fallback
        step = self._training_step()
        if self._source is not None and key == self._source.key:
            if step is not None and step != self._encoded_step:
                # Training moved the weights: re-encode the same images (one encoder pass).
                self._model.default_conditioning = self._encode(self._source)
                self._encoded_step = step
            return
        if self._source is not None and key == self._failed_key:
            return  # already reported; do not retry a bad input every frame
        try:
            source = self._load_source(key)
        except (DataError, ValueError, IndexError) as e:
            self._status(f"**Error:** {e}")
            self._failed_key = key
            if self._source is not None:
                return
            source = self._load_source(fallback)
        cond = self._encode(source)
        # Assign together at the end: an interrupted render leaves the previous state intact.
        self._model.default_conditioning = cond
        self._source, self._encoded_step, self._failed_key = source, step, None
        self._source_render, self._pca, self._query = None, None, None
        self._show_source_image(source)
        self._status(f"Encoded {source.label}.")

    def _cond(self) -> Conditioning:
        cond = self._model.default_conditioning
        assert cond is not None, "sync() encodes the source first"
        return cond

    def _show_source_image(self, source: Source) -> None:
        strip = torch.cat(list(source.rgb), dim=1)  # views side by side
        img = (strip.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        scale = max(1, 128 // img.shape[0])
        self.d_source_image.content = f"**Source:** {source.label}  \n![source]({png_data_url(img, scale)})"

    # ------------------------------------------------------------------------------------- cached maps
    def _render_source(self) -> dict[str, Tensor]:
        """v_NeRF, depth and accumulation of the (first) source view, rendered once per source."""
        if self._source_render is None:
            assert self._source is not None
            cam = self._source.cameras[0:1]
            self._source_render = render_camera_anywhere(self._model, self._cond(), cam, frozenset({"rgb", "v_nerf"}))
        return self._source_render

    def _source_foreground(self) -> Tensor:
        """Foreground pixels of the source view: its image's mask (where the field has some opacity).

        The image's own mask rather than the rendered opacity, so that a model that is still
        learning its density (faint renders) gets its PCA and keypoints from the object, not the background.
        """
        out = self._render_source()
        mask = self._source.mask[0].to(out["accumulation"].device)  # type: ignore[union-attr]
        if tuple(mask.shape) != tuple(out["accumulation"].shape[:2]):
            mask = out["accumulation"][..., 0] >= MIN_ACCUMULATION
        fg = mask & (out["accumulation"][..., 0] > 1e-3)
        return fg if bool(fg.any()) else out["accumulation"][..., 0] > 1e-3

    def _fit_pca_on_source(self) -> PCABasis:
        out = self._render_source()
        fg = self._source_foreground()
        feats = out["v_nerf"][fg] if bool(fg.any()) else out["v_nerf"].reshape(-1, out["v_nerf"].shape[-1])
        return PCABasis.fit(feats)

    def _ensure_pca(self) -> PCABasis:
        if self._pca is None:
            self._pca = self._fit_pca_on_source()
        return self._pca

    def _ensure_query(self) -> tuple[Tensor, Tensor] | None:
        """The similarity query (point, v_NeRF); default: the source view's foreground pixel nearest its centroid."""
        if self._query is None:
            out = self._render_source()
            fg = self._source_foreground()
            if not bool(fg.any()):
                return None
            rc = fg.nonzero().float()  # row-major, the order of surface_points' points
            points = surface_points(out["depth"], fg, self._source.cameras[0:1])  # type: ignore[union-attr]
            self._set_query(points[(rc - rc.mean(0)).norm(dim=1).argmin()])
        return self._query

    def _set_query(self, point: Tensor) -> None:
        feat = self._model.query_points(self._cond(), point.view(1, 3).to(self._model.device))["v_nerf"][0]
        self._query = (point.view(3), feat)
        self._draw_query_marker()

    def _ensure_reference(self) -> Reference | None:
        choice = self.g_reference_object.value
        if choice == NO_REFERENCE:
            return None
        key = (choice, int(self.h_reference_view.value))
        if self._reference is not None and self._reference.key == key:
            return self._reference
        cameras, rec = self._record(choice)
        view = key[1] % rec.num_views
        rgba = self._datamanager.load_views(rec, [view], with_teacher=False).rgba
        i = rec.camera_index(view)
        src = Source(key, choice, cameras[i : i + 1].to(self._model.device), rgba[..., :3], rgba[..., 3] > 0.5)
        cond = self._encode(src)
        feats = labels = torch.zeros(0)
        if rec.part_2d_path is not None:
            part = _read_npz(Path(rec.part_2d_path), "labels")[view]
            out = render_camera_anywhere(self._model, cond, src.cameras, frozenset({"v_nerf"}))
            v = out["v_nerf"]
            lab = torch.from_numpy(np.asarray(part, dtype=np.int64))
            if tuple(lab.shape) != tuple(v.shape[:2]):
                lab = F.interpolate(lab[None, None].float(), size=v.shape[:2], mode="nearest")[0, 0].long()
            fg = lab > 0
            feats, labels = v[fg.to(v.device)], lab[fg].to(v.device)
        kp_ids = kp_feats = None
        if rec.kp_3d_path is not None:
            kp = torch.from_numpy(np.asarray(_read_npz(Path(rec.kp_3d_path), "labels"), dtype=np.float32))
            if kp.ndim == 2 and kp.shape[1] == 4 and kp.shape[0] > 0:
                kp_ids = kp[:, 3].long()
                kp_feats = self._model.query_points(cond, kp[:, :3].to(self._model.device))["v_nerf"]
        self._reference = Reference(key, feats, labels, kp_ids, kp_feats)
        self._update_legend()
        return self._reference

    def _update_legend(self) -> None:
        if self.g_reference_object.value == NO_REFERENCE:
            self.i_legend.content = "*No annotated object in the data: labels and keypoints are unavailable.*"
            return
        present = None
        if self._reference is not None and self._reference.labels.numel():
            present = {int(v) for v in self._reference.labels.unique().tolist()}
        elif self._reference is not None:
            self.i_legend.content = "*The reference has no 2D part map.*"
            return
        self.i_legend.content = "**Parts** (labels output)  \n" + legend_markdown(
            self._part_names, label_palette(len(self._part_names)), present
        )

    # ------------------------------------------------------------------------------------- rendering
    def render_outputs(self, camera: Cameras, outputs: frozenset[str] | None = None) -> dict[str, Tensor]:
        """Everything the viewer shows for one camera (``FeatureNeRFModel.get_outputs_for_camera``).

        Args:
            camera: one camera (any pose, any resolution).
            outputs: outputs to compute for real; default: those selected in the viewer (all without
                one). The other keys are black images, so the "Output type" dropdown lists them all.
        """
        needed = self.requested_outputs() if outputs is None else frozenset(outputs)
        self.sync()
        self._update_keypoints()
        cond = self._cond()
        want_v = bool(needed & FEATURE_OUTPUTS)
        out = render_camera_anywhere(self._model, cond, camera, frozenset({"rgb", "v_nerf"} if want_v else {"rgb"}))
        acc = out["accumulation"]
        result = {"rgb": out["rgb"], "depth": out["depth"], "accumulation": acc}
        black = torch.zeros_like(out["rgb"])
        fg = acc[..., 0] >= float(self.ha_min_opacity.value)
        soft = acc.clamp(0.0, 1.0)
        for name in ("feature_pca", "labels", "similarity"):
            if name not in needed:
                result[name] = black
            elif name == "feature_pca":
                result[name] = self._ensure_pca().apply(out["v_nerf"]) * soft
            elif name == "labels":
                ref = self._ensure_reference()
                if ref is None or ref.labels.numel() == 0:
                    result[name] = black
                    continue
                v = out["v_nerf"]
                lab = transfer_part_labels(v.reshape(-1, v.shape[-1]), ref.feats, ref.labels, fg.reshape(-1))
                result[name] = colorize_labels(lab.view(fg.shape), label_palette(len(self._part_names)))
            else:
                query = self._ensure_query()
                if query is None:
                    result[name] = black
                    continue
                sim = cosine_similarity_map(out["v_nerf"], query[1])
                result[name] = similarity_colors(sim, float(self.l_similarity_min.value)) * soft
        return result

    # ------------------------------------------------------------------------------------- scene markers
    def _invalidate_keypoints(self) -> None:
        self._keypoints_drawn = None

    def _update_keypoints(self) -> None:
        """Draw (or remove) the transferred keypoints once per (source, reference) pair."""
        if self._viewer is None:
            return
        source = self._source.key if self._source is not None else None
        reference = (self.g_reference_object.value, int(self.h_reference_view.value))
        key = (source, reference, bool(self.j_show_keypoints.value))
        if self._keypoints_drawn == key:
            return
        scene = self._viewer.viser_server.scene
        for handle in self._keypoint_handles:
            handle.remove()
        self._keypoint_handles = []
        self._keypoints_drawn = key
        if not self.j_show_keypoints.value:
            return
        positions, ids = self.transferred_keypoints()
        if positions is None:
            return
        pts = positions.cpu().numpy() * SCENE_SCALE
        colors = (label_palette(int(ids.max()) + 1)[ids + 1].numpy() * 255).astype(np.uint8)
        self._keypoint_handles.append(
            scene.add_point_cloud(
                "/featurenerf_keypoints", points=pts, colors=colors, point_size=0.15, point_shape="circle"
            )  # fmt: skip
        )
        for p, i in zip(pts, ids.tolist(), strict=True):
            self._keypoint_handles.append(
                scene.add_label(f"/featurenerf_keypoint_labels/kp_{i}", text=f"kp {i}", position=tuple(p))
            )

    def transferred_keypoints(self) -> tuple[Tensor | None, Tensor | None]:
        """Reference keypoints moved to the source object: the surface point (of the source view's depth)
        whose v_NeRF is most similar to each keypoint's; ``(positions (K, 3), ids (K,))`` or Nones."""
        from featurenerf_ns.transfer.matching import transfer_points

        ref = self._ensure_reference()
        if ref is None or ref.kp_feats is None or ref.kp_ids is None:
            return None, None
        out = self._render_source()
        cand = surface_points(out["depth"], self._source_foreground(), self._source.cameras[0:1])  # type: ignore[union-attr]
        if cand.shape[0] == 0:
            return None, None
        cand_feats = self._model.query_points(self._cond(), cand)["v_nerf"]
        return transfer_points(ref.kp_feats, cand_feats, cand), ref.kp_ids

    def _draw_query_marker(self) -> None:
        if self._viewer is None or self._query is None:
            return
        p = tuple(float(x) * SCENE_SCALE for x in self._query[0].tolist())
        self._viewer.viser_server.scene.add_icosphere("/featurenerf_query", radius=0.08, color=(255, 255, 255),
                                                      position=p)  # fmt: skip

    # ------------------------------------------------------------------------------------- clicks
    def start_picking(self) -> None:
        """Next click in the 3D view picks the similarity query point (then clicking is released)."""
        if self._viewer is None:
            return
        self.viewer_control.register_pointer_cb("click", self._on_click)
        self._status("Click on the object to pick the similarity point.")

    def _on_click(self, click: ViewerClick) -> None:
        with contextlib.suppress(Exception):
            self.viewer_control.unregister_pointer_cb()
        with self._lock():
            self.sync()
            origin = torch.tensor(click.origin, dtype=torch.float32)
            direction = torch.tensor(click.direction, dtype=torch.float32)
            min_opacity = float(self.ha_min_opacity.value)
            point, opacity = surface_point(self._model, self._cond(), origin, direction, min_opacity)
            if point is None:
                self._status(
                    f"The click missed the object (ray opacity {opacity:.2f} < 'Label min opacity' {min_opacity:.2f}):"
                    " press 'Pick similarity point' and try again."
                )
                return
            self._set_query(point)
            self._status(f"Similarity point at ({', '.join(f'{x:.2f}' for x in point.tolist())}).")
        if self._viewer is not None:
            self._viewer._trigger_rerender()

    def _on_connect(self, client) -> None:
        # viser knows a client's camera only after its first camera message; move it then, once.
        moved = []

        @client.camera.on_update
        def _(_camera) -> None:
            if not moved:
                moved.append(True)
                self._move_client(client)

    def move_clients_to_source(self) -> None:
        """Put every connected viewer camera at the (first) source view."""
        if self._viewer is None:
            return
        for client in self._viewer.viser_server.get_clients().values():
            self._move_client(client)

    def _move_client(self, client) -> None:
        if self._source is not None:
            cam = self._source.cameras[0:1].to("cpu")
        else:
            cameras, records = self._splits[self._eval_split]
            cam = cameras[records[0].camera_index(0) : records[0].camera_index(0) + 1]
        c2w = cam.camera_to_worlds[0].numpy().astype(np.float64)
        fov = 2.0 * float(np.arctan(float(cam.cy[0, 0]) / float(cam.fy[0, 0])))
        with client.atomic():
            client.camera.up_direction = (0.0, 1.0, 0.0)
            client.camera.position = tuple(c2w[:3, 3] * SCENE_SCALE)
            client.camera.look_at = (0.0, 0.0, 0.0)
            client.camera.fov = fov

    # ------------------------------------------------------------------------------------- orbit export
    def orbit_dir(self) -> Path:
        base = Path(self._viewer.log_filename).parent if self._viewer is not None else Path("renders")
        return base.resolve() / "viewer_renders"

    def render_orbit(self, output: str | None = None, num_views: int = ORBIT_VIEWS, folder: Path | None = None) -> Path:
        """Save ``output`` (default: the one shown) for an orbit of ``num_views`` cameras as PNGs.

        The orbit circles the object at the source camera's distance and intrinsics, 30 degrees above
        the horizon. Each view takes the training lock separately, so training (and the viewer) wait
        at most one render. Returns the folder (``<run>/viewer_renders/<time>_<object>_<output>``).
        """
        if output is None:
            output = "rgb" if self._viewer is None else self._viewer.control_panel.output_render
        if output not in OUTPUTS:
            output = "rgb"
        with self._lock():
            self.sync()
            source = self._source
            assert source is not None
            cameras = orbit_cameras(source.cameras.to("cpu"), num_views)
        name = source.label.split(",")[0].replace("/", "_").replace("`", "").replace(" ", "_")
        folder = folder or self.orbit_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}_{name}_{output}"
        folder.mkdir(parents=True, exist_ok=True)
        options = self._viewer.control_panel.colormap_options if self._viewer is not None else ColormapOptions()
        if output in ("depth", "accumulation") and self._viewer is None:
            options = ColormapOptions(colormap="turbo", normalize=True)
        for i in range(num_views):
            with self._lock():
                image = self.render_outputs(cameras[i : i + 1].to(self._model.device), frozenset({output}))[output]
            rgb = apply_colormap(image, options).clamp(0, 1)
            Image.fromarray((rgb * 255).round().to(torch.uint8).cpu().numpy()).save(folder / f"{i:03d}.png")
            self._status(f"Rendering views: {i + 1}/{num_views} -> `{folder}`")
        self.last_orbit_dir = folder
        self._status(f"Saved {num_views} views of `{output}` to `{folder}`")
        return folder

    def render_orbit_async(self) -> threading.Thread | None:
        """Run :meth:`render_orbit` in a thread (a button callback must not hold the lock for 24 renders)."""
        if self._orbit_thread is not None and self._orbit_thread.is_alive():
            self._status("Already rendering views.")
            return None

        def work() -> None:
            try:
                self.render_orbit()
            except Exception as e:  # a failed export must not take the viewer down
                CONSOLE.print(f"[red]Render views failed: {e}")
                self._status(f"**Render views failed:** {e}")

        self._orbit_thread = threading.Thread(target=work, daemon=True)
        self._orbit_thread.start()
        return self._orbit_thread


def _read_npz(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (OSError, KeyError, ValueError) as e:
        raise DataError(path, f"cannot read {key!r} ({e})") from None


def make_panel(pipeline: Any) -> FeatureNeRFViewerPanel | None:
    """The panel for a FeatureNeRF pipeline; None (with one log line) when its data cannot feed one."""
    try:
        return FeatureNeRFViewerPanel(pipeline)
    except (KeyError, IndexError, AttributeError) as e:
        CONSOLE.print(f"FeatureNeRF viewer panel disabled: {e!r}")
        return None
