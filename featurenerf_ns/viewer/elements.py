"""The panel's GUI: its widgets (nerfstudio ``ViewerElement``s, plus markdown, upload and progress-bar ones) and
their layout.

nerfstudio's viewer finds the elements among the attributes of the pipeline's ``FeatureNeRF`` module and lists them
sorted by attribute name: the letter prefixes of :class:`PanelElements`' attributes fix their order on the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerCheckbox,
    ViewerDropdown,
    ViewerElement,
    ViewerNumber,
    ViewerSlider,
    ViewerText,
)
from torch import nn

from featurenerf_ns.model.views import MIN_ACCUMULATION

if TYPE_CHECKING:
    import viser
    from viser._gui_handles import UploadedFile

OUTPUTS = ("rgb", "depth", "accumulation", "feature_pca", "labels", "similarity")
"""Keys of the viewer's outputs, in dropdown order."""
IMAGE_FILE = "image file (path below)"
"""Source option that encodes the image file typed in the panel."""
UPLOADED_IMAGE = "uploaded image"
"""Source option that encodes the last image uploaded with the panel's button."""
NO_REFERENCE = "(no annotated object)"
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


class ViewerUploadButton(ViewerElement["UploadedFile"]):
    """viser's upload button: ``cb_hook(element)`` runs once a file has arrived, ``value`` is the last upload."""

    def __init__(
        self, name: str, cb_hook: Callable[[ViewerUploadButton], Any], hint: str | None = None, mime_type: str = "*/*"
    ) -> None:
        super().__init__(name, cb_hook=cb_hook)
        self.hint = hint
        self.mime_type = mime_type

    def _create_gui_handle(self, viser_server: viser.ViserServer) -> None:
        self.gui_handle = viser_server.gui.add_upload_button(  # type: ignore[assignment]
            self.name, disabled=self.disabled, visible=self.visible, hint=self.hint, mime_type=self.mime_type
        )

    def install(self, viser_server: viser.ViserServer) -> None:
        self._create_gui_handle(viser_server)
        self.gui_handle.on_upload(lambda _: self.cb_hook(self))  # type: ignore[union-attr]

    @property
    def value(self) -> UploadedFile:
        """The last upload (``name``, ``content``)."""
        assert self.gui_handle is not None
        return self.gui_handle.value  # type: ignore[return-value]


class ViewerProgressBar(ViewerElement[float]):
    """viser's progress bar (``value`` in [0, 100]), hidden until :meth:`show` is called."""

    def __init__(self, name: str) -> None:
        super().__init__(name, visible=False)
        self._value = 0.0

    def _create_gui_handle(self, viser_server: viser.ViserServer) -> None:
        self.gui_handle = viser_server.gui.add_progress_bar(self._value, visible=self.visible)  # type: ignore[assignment]

    def install(self, viser_server: viser.ViserServer) -> None:
        self._create_gui_handle(viser_server)

    @property
    def value(self) -> float:
        return self._value

    @value.setter
    def value(self, percent: float) -> None:
        self._value = float(min(100.0, max(0.0, percent)))
        if self.gui_handle is not None:
            self.gui_handle.value = self._value  # type: ignore[union-attr]

    def show(self) -> None:
        self.visible = True
        if self.gui_handle is not None:
            self.gui_handle.visible = True


class PanelHandlers(Protocol):
    """What the elements call (the panel): each callback gets the element that changed."""

    def on_source_change(self, element: ViewerElement) -> None: ...
    def on_image_file(self, element: ViewerElement) -> None: ...
    def on_upload(self, element: ViewerUploadButton) -> None: ...
    def on_view_source(self, element: ViewerElement) -> None: ...
    def on_refresh_pca(self, element: ViewerElement) -> None: ...
    def on_reference_change(self, element: ViewerElement) -> None: ...
    def on_show_keypoints(self, element: ViewerElement) -> None: ...
    def on_show_source_camera(self, element: ViewerElement) -> None: ...
    def on_pick_point(self, element: ViewerElement) -> None: ...
    def on_render_views(self, element: ViewerElement) -> None: ...


class PanelElements(nn.Module):
    """The panel's widgets, in page order (an ``nn.Module`` without parameters, so nerfstudio's viewer looks for
    elements inside it)."""

    def __init__(self, source_options: list[str], reference_options: list[str], handlers: PanelHandlers) -> None:
        super().__init__()
        h = handlers
        self.a_source_object = ViewerDropdown(
            "Source object", source_options[0], source_options, cb_hook=h.on_source_change,
            hint="Object whose source view(s) condition the field (eval split), an image file or an uploaded image",
        )  # fmt: skip
        self.b_image_file = ViewerText(
            "Image file", "", cb_hook=h.on_image_file,
            hint="RGBA image (alpha = the object's mask), cropped around the object and seen by the canonical camera",
        )  # fmt: skip
        self.ba_upload_image = ViewerUploadButton(
            "Upload image", cb_hook=h.on_upload, mime_type="image/png",
            hint="RGBA PNG from this computer (alpha = the object's mask) as the source",
        )  # fmt: skip
        self.c_source_views = ViewerText(
            "Source views", "0", cb_hook=h.on_source_change,
            hint="Comma-separated view indices of the source object, e.g. 0 or 0,2",
        )  # fmt: skip
        self.d_source_image = ViewerMarkdown("Source image", "*source not encoded yet*")
        self.e_view_source = ViewerButton("View from source", cb_hook=h.on_view_source)
        self.f_refresh_pca = ViewerButton("Refresh PCA", cb_hook=h.on_refresh_pca)
        self.g_reference_object = ViewerDropdown(
            "Reference object", reference_options[0], reference_options, cb_hook=h.on_reference_change,
            hint="Annotated object whose parts (labels output) and 3D keypoints are transferred",
        )  # fmt: skip
        self.h_reference_view = ViewerNumber(
            "Reference view", 0, cb_hook=h.on_reference_change, hint="View of the reference whose part map is used"
        )
        self.ha_min_opacity = ViewerSlider(
            "Label min opacity", MIN_ACCUMULATION, 0.05, 0.95, 0.05,
            hint="Rendered pixels (and clicks) with less opacity are background for labels",
        )  # fmt: skip
        self.i_legend = ViewerMarkdown("Legend", "")
        self.j_show_keypoints = ViewerCheckbox(
            "Show keypoints", True, cb_hook=h.on_show_keypoints,
            hint="Draw the reference's 3D keypoints transferred to the source object",
        )  # fmt: skip
        self.ja_show_source_camera = ViewerCheckbox(
            "Show source camera", True, cb_hook=h.on_show_source_camera,
            hint="Draw the source camera with its image (it covers the view while looking from the source)",
        )  # fmt: skip
        self.k_pick_point = ViewerButton("Pick similarity point", cb_hook=h.on_pick_point)
        self.l_similarity_min = ViewerSlider(
            "Similarity min", SIMILARITY_FLOOR, -1.0, 0.95, 0.05,
            hint="Cosine similarity shown at the blue end of turbo (1 = the picked point is the red end)",
        )  # fmt: skip
        self.m_render_views = ViewerButton("Render views", cb_hook=h.on_render_views)
        self.ma_render_progress = ViewerProgressBar("Render views progress")
        self.n_status = ViewerMarkdown("Status", "")
