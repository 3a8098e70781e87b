"""The panel's "Render views" export: one output of the current source seen from an orbit of cameras, as PNGs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.colormaps import ColormapOptions, apply_colormap
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from torch import Tensor

from featurenerf_ns.model.views import orbit_cameras

ORBIT_VIEWS = 24


def orbit_folder(base: Path, source_label: str, output: str) -> Path:
    """``<base>/<time>_<object>_<output>``: the source's label made a file name."""
    name = source_label.split(",")[0].replace("/", "_").replace("`", "").replace(" ", "_")
    return base / f"{time.strftime('%Y%m%d-%H%M%S')}_{name}_{output}"


def render_orbit(
    render: Callable[[Cameras], Float[Tensor, "H W C"]],
    reference: Cameras,
    folder: Path,
    colormap: ColormapOptions,
    num_views: int = ORBIT_VIEWS,
    lock: AbstractContextManager | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Path:
    """Save ``render(camera)`` (through ``colormap``) for an orbit of ``num_views`` cameras as ``000.png``, ...

    The orbit circles the object at the ``reference`` camera's distance and intrinsics, 30 degrees above the horizon
    (:func:`~featurenerf_ns.model.views.orbit_cameras`). Each view is rendered under ``lock`` separately, so training
    (and the viewer) wait at most one render; ``progress(done, total)`` is called after each saved view.
    """
    cameras = orbit_cameras(reference.to("cpu"), num_views)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_views):
        with lock if lock is not None else contextlib.nullcontext():
            image = render(cameras[i : i + 1])
        rgb = apply_colormap(image, colormap).clamp(0, 1)
        Image.fromarray((rgb * 255).round().to(torch.uint8).cpu().numpy()).save(folder / f"{i:03d}.png")
        progress(i + 1, num_views)
    return folder


class BackgroundJob:
    """One job at a time in a daemon thread (a button callback must not hold the viewer for 24 renders)."""

    def __init__(self, report_error: Callable[[str], None]) -> None:
        self._report_error = report_error
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, work: Callable[[], object], name: str) -> threading.Thread | None:
        """Run ``work`` in a thread; None (nothing started) while the previous job runs. A failure is reported
        (console and ``report_error``) instead of taking the viewer down."""
        if self.running:
            return None

        def run() -> None:
            try:
                work()
            except Exception as e:
                CONSOLE.print(f"[red]{name} failed: {e}")
                self._report_error(f"**{name} failed:** {e}")

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self._thread
