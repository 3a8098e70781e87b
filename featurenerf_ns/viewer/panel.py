"""The "FeatureNeRF" panel of nerfstudio's viser viewer.

A generalizable NeRF renders nothing until it is told which image conditions it, so the panel first picks the
*source* (:mod:`featurenerf_ns.viewer.source`): an object of the eval split (``test`` under ``ns-viewer``) and its
source view(s), or a photo, an RGBA image file or a PNG uploaded from the browser (cropped around its mask and seen
by the category's canonical camera, :mod:`featurenerf_ns.model.photo`). The source is encoded once when it changes
and drawn in the scene as a frustum showing its image.

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
markers in the scene (:mod:`featurenerf_ns.viewer.overlays`); "Render views" saves an orbit
(:mod:`featurenerf_ns.viewer.export`) with a progress bar.

Wiring: the panel is a client of :class:`~featurenerf_ns.model.api.TrainedFeatureNeRF`, built over the live
pipeline's model and datamanager (the model's train/eval mode left to the trainer), and keeps its own state: it sets
nothing on the model or the pipeline. :func:`make_panel` is the factory registered under the ``featurenerf_ns.viewer``
entry points; the pipeline builds the panel through it when nerfstudio's viewer looks for elements (its
``FeatureNeRF`` property) and then renders the viewer's cameras with :meth:`FeatureNeRFViewerPanel.render_outputs`
(``FeatureNeRFPipeline.render_viewer_camera``). The widgets are :class:`~featurenerf_ns.viewer.elements.PanelElements`;
:class:`PanelViewerControl` (a ``ViewerControl``) hands over the running viewer: viser scene, clicks, the lock shared
with training, the selected output, the run directory.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.colormaps import ColormapOptions
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerClick, ViewerControl
from torch import Tensor

from featurenerf_ns.categories import resolve_category
from featurenerf_ns.layout import read_kp_3d, read_part_2d
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.field import Conditioning
from featurenerf_ns.model.views import MIN_ACCUMULATION, surface_point, surface_points
from featurenerf_ns.transfer.matching import transfer_part_labels, transfer_points
from featurenerf_ns.utils.colors import (
    colorize_labels,
    cosine_similarity_map,
    label_palette,
    png_data_url,
    similarity_colors,
)
from featurenerf_ns.utils.features import PCABasis
from featurenerf_ns.viewer.elements import (
    IMAGE_FILE,
    NO_REFERENCE,
    OUTPUTS,
    UPLOADED_IMAGE,
    PanelElements,
    ViewerUploadButton,
)
from featurenerf_ns.viewer.export import ORBIT_VIEWS, BackgroundJob, orbit_folder, render_orbit
from featurenerf_ns.viewer.overlays import NO_ANNOTATION_LEGEND, SCENE_SCALE, SceneOverlays, legend_text
from featurenerf_ns.viewer.source import SOURCE_ERRORS, Source, SourceState, decode_upload, parse_views

FEATURE_OUTPUTS = frozenset({"feature_pca", "labels", "similarity"})
"""Outputs that need v_NeRF rendered."""
MAX_OPTIONS = 200
"""Objects listed per dropdown (the first ones of each split)."""


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


class FeatureNeRFViewerPanel(PanelElements):
    """Viewer panel of FeatureNeRF (see the module docstring). Holds no parameters."""

    def __init__(self, tf: TrainedFeatureNeRF) -> None:
        eval_split = "val" if tf.datamanager.test_mode == "val" else "test"
        source_options = [f"{eval_split}/{r.obj_id}" for r in tf.objects(eval_split)[:MAX_OPTIONS]]
        source_options += [IMAGE_FILE, UPLOADED_IMAGE]
        ref_options = [
            f"{split}/{r.obj_id}"
            for split in (eval_split, "train")
            for r in tf.objects(split)[:MAX_OPTIONS]
            if r.part_2d_path is not None or r.kp_3d_path is not None
        ] or [NO_REFERENCE]
        super().__init__(source_options, ref_options, self)
        self.tf = tf
        self.eval_split = eval_split
        try:
            self.part_names: tuple[str, ...] = resolve_category(tf.category).parts
        except ValueError:
            self.part_names = ()
        self.viewer_control = PanelViewerControl(self)

        self._viewer = None
        self.sources = SourceState(tf)
        self.overlays = SceneOverlays()
        self.orbit_job = BackgroundJob(self._status)
        self._source_render: dict[str, Tensor] | None = None
        self._pca: PCABasis | None = None
        self._reference: Reference | None = None
        self._query: tuple[Tensor, Tensor] | None = None
        self._keypoints_drawn: tuple | None = None
        self.last_orbit_dir: Path | None = None
        """Folder of the last "Render views" export."""
        self._update_legend()

    # ------------------------------------------------------------------------------------- access
    @property
    def _source(self) -> Source | None:
        return self.sources.source

    def attach_viewer(self, viewer) -> None:
        """Called once nerfstudio's viewer is built: camera on connect, CPU resolution, scene overlays, legend."""
        self._viewer = viewer
        if self.tf.device.type == "cpu":
            # nerfstudio renders at "Max res" once the camera stops (512 by default) and at a resolution
            # sized to its measured rays/s while it moves. On CPU, 4x the training resolution shows all
            # the model resolves and keeps a refined frame within about a second for small models.
            viewer.control_panel._max_res.value = int(min(512, max(64, 4 * max(self.tf.image_size))))
        viewer.viser_server.on_client_connect(lambda client: self._on_connect(client))
        self.overlays.attach(viewer.viser_server.scene)
        if self._source is not None:
            self.overlays.draw_source(self._source)
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
    def on_source_change(self, _=None) -> None:
        # The work happens once, in the render that nerfstudio triggers after every panel callback.
        self.sources.retry()

    def on_image_file(self, _=None) -> None:
        if self.b_image_file.value.strip() and self.a_source_object.value != IMAGE_FILE:
            self.a_source_object.value = IMAGE_FILE
        self.sources.retry()

    def on_upload(self, element: ViewerUploadButton) -> None:
        upload = element.value
        self.upload_image(upload.name, upload.content)

    def upload_image(self, name: str, content: bytes) -> None:
        """Make an uploaded image file the source (encoded in the next render); the status says why not."""
        try:
            self.sources.upload = decode_upload(name, content)
        except SOURCE_ERRORS as e:
            self._status(f"**Error:** {e}")
            return
        self.a_source_object.value = UPLOADED_IMAGE
        self.sources.retry()

    def on_view_source(self, _=None) -> None:
        self.move_clients_to_source()

    def on_reference_change(self, _=None) -> None:
        self._reference = None
        self._keypoints_drawn = None
        self._update_legend()

    def on_show_keypoints(self, _=None) -> None:
        self._keypoints_drawn = None

    def on_show_source_camera(self, _=None) -> None:
        self.overlays.set_source_visible(bool(self.ja_show_source_camera.value))

    def on_pick_point(self, _=None) -> None:
        self.start_picking()

    def on_render_views(self, _=None) -> None:
        self.render_orbit_async()

    def on_refresh_pca(self, _=None) -> None:
        """Refit the PCA on the current view of the first client (the source view without a viewer)."""
        self.sync()
        camera = self._current_camera()
        if camera is None:
            self._pca = self._fit_pca_on_source()
            return
        out = self.tf.render_view(self._cond(), camera, ("v_nerf",))
        fg = out["accumulation"][..., 0] >= MIN_ACCUMULATION
        if not bool(fg.any()):
            self._status("Refresh PCA: no object in the current view; basis unchanged.")
            return
        self._pca = PCABasis.fit(out["v_nerf"][fg])
        self._status("PCA basis refitted on the current view.")

    def _current_camera(self) -> Cameras | None:
        if self._viewer is None or not self._viewer.viser_server.get_clients():
            return None
        h = 2 * max(self.tf.image_size)
        client = next(iter(self._viewer.viser_server.get_clients().values()))
        return self.viewer_control.get_camera(h, int(h * client.camera.aspect))

    # ------------------------------------------------------------------------------------- source
    def _selected_source(self) -> tuple:
        choice = self.a_source_object.value
        if choice == IMAGE_FILE:
            return ("file", self.b_image_file.value.strip())
        if choice == UPLOADED_IMAGE:
            upload = self.sources.upload
            return ("upload", None, None) if upload is None else ("upload", upload.name, upload.digest)
        return ("object", choice, parse_views(self.c_source_views.value))

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
        current = self._source.key if self._source is not None else fallback
        step = self._training_step()
        try:
            key = self._selected_source()
        except ValueError as e:
            self._status(f"**Error:** {e}")
            key = current
        try:
            changed = self.sources.select(key, step)
        except SOURCE_ERRORS as e:
            self._status(f"**Error:** {e}")
            if self._source is not None:
                return
            changed = self.sources.select(fallback, step)
        if not changed:
            return
        source = self._source
        self._source_render, self._pca, self._query = None, None, None
        strip = torch.cat(list(source.rgb), dim=1)  # views side by side
        img = (strip.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        scale = max(1, 128 // img.shape[0])
        self.d_source_image.content = f"**Source:** {source.label}  \n![source]({png_data_url(img, scale)})"
        self.overlays.draw_source(source)
        self._status(f"Encoded {source.label}.")

    def _cond(self) -> Conditioning:
        cond = self.sources.cond
        assert cond is not None, "sync() encodes the source first"
        return cond

    # ------------------------------------------------------------------------------------- cached maps
    def _render_source(self) -> dict[str, Tensor]:
        """v_NeRF, depth and accumulation of the (first) source view, rendered once per source."""
        if self._source_render is None:
            self._source_render = self.tf.render_view(self._cond(), self._source.camera, ("rgb", "v_nerf"))
        return self._source_render

    def _source_foreground(self) -> Tensor:
        """Foreground pixels of the source view: its image's mask (where the field has some opacity).

        The image's own mask rather than the rendered opacity, so that a model that is still
        learning its density (faint renders) gets its PCA and keypoints from the object, not the background.
        """
        out = self._render_source()
        mask = self._source.mask[0].to(out["accumulation"].device)
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
            points = surface_points(out["depth"], fg, self._source.camera)
            self._set_query(points[(rc - rc.mean(0)).norm(dim=1).argmin()])
        return self._query

    def _set_query(self, point: Tensor) -> None:
        feat = self.tf.query(self._cond(), point.view(1, 3), outputs=("v_nerf",))["v_nerf"][0]
        self._query = (point.view(3), feat)
        self.overlays.draw_query(self._query[0])

    def _ensure_reference(self) -> Reference | None:
        choice = self.g_reference_object.value
        if choice == NO_REFERENCE:
            return None
        key = (choice, int(self.h_reference_view.value))
        if self._reference is not None and self._reference.key == key:
            return self._reference
        tf = self.tf
        split, _, obj_id = choice.partition("/")
        rec = tf.record(split, obj_id)
        view = key[1] % rec.num_views
        cond = tf.encode(split, obj_id, [view])
        feats = labels = torch.zeros(0)
        if rec.part_2d_path is not None:
            v = tf.render_view(cond, tf.camera(split, obj_id, view), ("v_nerf",))["v_nerf"]
            lab = torch.from_numpy(read_part_2d(rec.part_2d_path)[view])
            if tuple(lab.shape) != tuple(v.shape[:2]):
                lab = F.interpolate(lab[None, None].float(), size=v.shape[:2], mode="nearest")[0, 0].long()
            fg = lab > 0
            feats, labels = v[fg.to(v.device)], lab[fg].to(v.device)
        kp_ids = kp_feats = None
        if rec.kp_3d_path is not None:
            kp = torch.from_numpy(read_kp_3d(rec.kp_3d_path)[0]).float()
            if kp.shape[0] > 0:
                kp_ids = kp[:, 3].long()
                kp_feats = tf.query(cond, kp[:, :3], outputs=("v_nerf",))["v_nerf"]
        self._reference = Reference(key, feats, labels, kp_ids, kp_feats)
        self._update_legend()
        return self._reference

    def _update_legend(self) -> None:
        if self.g_reference_object.value == NO_REFERENCE:
            self.i_legend.content = NO_ANNOTATION_LEGEND
            return
        ref = self._reference
        present = {int(v) for v in ref.labels.unique().tolist()} if ref is not None and ref.labels.numel() else None
        has_part_map = ref is None or ref.labels.numel() > 0
        self.i_legend.content = legend_text(self.part_names, present, has_part_map)

    # ------------------------------------------------------------------------------------- rendering
    def render_outputs(self, camera: Cameras, outputs: frozenset[str] | None = None) -> dict[str, Tensor]:
        """Everything the viewer shows for one camera (the pipeline's ``render_viewer_camera``).

        Args:
            camera: one camera (any pose, any resolution).
            outputs: outputs to compute for real; default: those selected in the viewer (all without
                one). The other keys are black images, so the "Output type" dropdown lists them all.
        """
        needed = self.requested_outputs() if outputs is None else frozenset(outputs)
        self.sync()
        self._update_keypoints()
        want_v = bool(needed & FEATURE_OUTPUTS)
        out = self.tf.render_view(self._cond(), camera, ("rgb", "v_nerf") if want_v else ("rgb",))
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
                result[name] = colorize_labels(lab.view(fg.shape), label_palette(len(self.part_names)))
            else:
                query = self._ensure_query()
                if query is None:
                    result[name] = black
                    continue
                sim = cosine_similarity_map(out["v_nerf"], query[1])
                result[name] = similarity_colors(sim, float(self.l_similarity_min.value)) * soft
        return result

    # ------------------------------------------------------------------------------------- scene markers
    def _update_keypoints(self) -> None:
        """Draw (or remove) the transferred keypoints once per (source, reference) pair."""
        if self._viewer is None:
            return
        source = self._source.key if self._source is not None else None
        reference = (self.g_reference_object.value, int(self.h_reference_view.value))
        key = (source, reference, bool(self.j_show_keypoints.value))
        if self._keypoints_drawn == key:
            return
        self._keypoints_drawn = key
        self.overlays.draw_keypoints(*(self.transferred_keypoints() if self.j_show_keypoints.value else (None, None)))

    def transferred_keypoints(self) -> tuple[Tensor | None, Tensor | None]:
        """Reference keypoints moved to the source object: the surface point (of the source view's depth)
        whose v_NeRF is most similar to each keypoint's; ``(positions (K, 3), ids (K,))`` or Nones."""
        ref = self._ensure_reference()
        if ref is None or ref.kp_feats is None or ref.kp_ids is None:
            return None, None
        out = self._render_source()
        cand = surface_points(out["depth"], self._source_foreground(), self._source.camera)
        if cand.shape[0] == 0:
            return None, None
        cand_feats = self.tf.query(self._cond(), cand, outputs=("v_nerf",))["v_nerf"]
        return transfer_points(ref.kp_feats, cand_feats, cand), ref.kp_ids

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
            point, opacity = surface_point(self.tf.model, self._cond(), origin, direction, min_opacity)
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
            cam = self._source.camera.to("cpu")
        else:
            cam = self.tf.camera(self.eval_split, self.tf.objects(self.eval_split)[0].obj_id, 0).to("cpu")
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
        """Save ``output`` (default: the one shown) of the current source for an orbit of ``num_views`` cameras as
        PNGs (:func:`~featurenerf_ns.viewer.export.render_orbit`), with the progress bar and status updated per view.
        Returns the folder (``<run>/viewer_renders/<time>_<object>_<output>`` by default)."""
        if output is None:
            output = "rgb" if self._viewer is None else self._viewer.control_panel.output_render
        if output not in OUTPUTS:
            output = "rgb"
        with self._lock():
            self.sync()
            source = self._source
        folder = folder or orbit_folder(self.orbit_dir(), source.label, output)
        options = self._viewer.control_panel.colormap_options if self._viewer is not None else ColormapOptions()
        if output in ("depth", "accumulation") and self._viewer is None:
            options = ColormapOptions(colormap="turbo", normalize=True)
        self.ma_render_progress.value = 0.0
        self.ma_render_progress.show()

        def progress(done: int, total: int) -> None:
            self.ma_render_progress.value = 100.0 * done / total
            self._status(f"Rendering views: {done}/{total} -> `{folder}`")

        render_orbit(
            lambda camera: self.render_outputs(camera, frozenset({output}))[output],
            source.camera, folder, options, num_views, self._lock(), progress,
        )  # fmt: skip
        self.last_orbit_dir = folder
        self._status(f"Saved {num_views} views of `{output}` to `{folder}`")
        return folder

    def render_orbit_async(self):
        """Run :meth:`render_orbit` in a thread; None when views are already being rendered."""
        thread = self.orbit_job.start(self.render_orbit, "Render views")
        if thread is None:
            self._status("Already rendering views.")
        return thread


def make_panel(pipeline: Any) -> FeatureNeRFViewerPanel | None:
    """The panel for a FeatureNeRF pipeline (the ``featurenerf_ns.viewer`` entry point); None (with one log line)
    when its data cannot feed one."""
    try:
        tf = TrainedFeatureNeRF(pipeline.model, pipeline.datamanager, set_eval=False)
        return FeatureNeRFViewerPanel(tf)
    except (KeyError, IndexError, AttributeError) as e:
        CONSOLE.print(f"FeatureNeRF viewer panel disabled: {e!r}")
        return None
