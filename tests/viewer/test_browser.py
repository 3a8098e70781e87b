"""End to end in a real browser: ns-viewer on a trained tiny run, driven by headless Chromium.

Checks the FeatureNeRF panel's controls are on the page, picks ``feature_pca`` in nerfstudio's
"Output type" dropdown (by clicking it, as a user would), waits for the rendered frame and asserts
that the object's pixels are not one colour; then uploads a PNG through the panel's upload button and waits for the
source label to name it. The canvas screenshots are kept under ``test-artifacts/viewer/`` (git-ignored). Skips,
saying why, when Chromium or playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PANEL_LABELS = ("FeatureNeRF", "Source object", "Image file", "Upload image", "Source views", "Refresh PCA",
                "Reference object", "Reference view", "Show keypoints", "Pick similarity point",
                "Render views")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ns-viewer exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"ns-viewer did not serve {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _viewport(page) -> dict:
    """Page region of the 3D view not covered by the control panel (the canvas spans the whole page)."""
    canvas = page.locator("canvas").first.bounding_box()
    panel_left = page.get_by_text("Connected", exact=True).first.bounding_box()["x"] - 40
    return {"x": canvas["x"], "y": canvas["y"], "width": panel_left - canvas["x"], "height": canvas["height"]}


def _frame_after_change(page, previous: np.ndarray | None, path: Path, timeout: float = 90.0) -> np.ndarray:
    """Screenshot of the 3D view once it differs from ``previous`` and has stopped changing (the refined frame)."""
    deadline = time.time() + timeout
    last = None
    clip = _viewport(page)
    while time.time() < deadline:
        page.screenshot(path=str(path), clip=clip)
        frame = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
        changed = previous is None or frame.shape != previous.shape or np.abs(frame - previous).mean() > 0.5
        if changed and last is not None and frame.shape == last.shape and np.abs(frame - last).mean() < 0.05:
            return frame
        last = frame if changed else None
        time.sleep(1.5)
    raise AssertionError(f"the rendered frame did not settle on a new image within {timeout:.0f} s (see {path})")


def drive_viewer(url: str, artifacts: Path, upload: Path) -> dict[str, Path]:
    """Open the viewer, check the panel, switch to feature_pca, upload ``upload`` as the source; returns the
    screenshots' paths."""
    from playwright.sync_api import sync_playwright

    artifacts.mkdir(parents=True, exist_ok=True)
    names = ("page", "canvas_rgb", "canvas_feature_pca", "page_feature_pca", "canvas_uploaded", "page_uploaded")
    shots = {k: artifacts / f"{k}.png" for k in names}
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )  # fmt: skip
        try:
            page = context.new_page()
            page.goto(url)
            for label in PANEL_LABELS:
                page.get_by_text(label, exact=True).first.wait_for(timeout=90_000)
            page.get_by_text("Resolution: ", exact=False).first.wait_for(timeout=30_000)
            # Only the rendered image on the canvas: hide the training cameras' frustums, the keypoint markers and the
            # source camera (the view starts at the source: its frustum's image would cover the render).
            page.get_by_role("button", name="Hide Train Cams").click()
            page.get_by_label("Show keypoints").uncheck(force=True)
            page.get_by_label("Show source camera").uncheck(force=True)
            rgb = _frame_after_change(page, None, shots["canvas_rgb"])
            page.screenshot(path=str(shots["page"]))
            page.get_by_label("Output type").click()
            page.get_by_role("option", name="feature_pca", exact=True).click()
            assert page.get_by_label("Output type").input_value() == "feature_pca"
            pca = _frame_after_change(page, rgb, shots["canvas_feature_pca"])
            page.screenshot(path=str(shots["page_feature_pca"]))
            # The upload button's (hidden) file input, as the file dialog would fill it.
            page.locator("input[type=file]").set_input_files(str(upload))
            page.get_by_text(f"{upload.name} (uploaded)", exact=False).first.wait_for(timeout=90_000)
            _frame_after_change(page, pca, shots["canvas_uploaded"])
            page.screenshot(path=str(shots["page_uploaded"]))
        finally:
            context.close()
    return shots


def object_pixels(frame: np.ndarray, threshold: int = 12) -> np.ndarray:
    """``(N, 3)`` colours of the non-black pixels of a 3D-view screenshot (the object: the background is black),
    leaving out the orientation gizmo in the bottom-left corner."""
    h, w = frame.shape[:2]
    keep = np.ones((h, w), dtype=bool)
    keep[h - 120 :, :120] = False
    pixels = frame[keep]
    return pixels[pixels.max(1) > threshold]


def test_viewer_panel_in_chromium(viewer_run, trained_tiny):
    if not CHROMIUM.is_file():
        print(f"SKIP reason: {CHROMIUM} is missing (apt-get install chromium); the browser test needs it")
        pytest.skip(f"{CHROMIUM} not installed")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("SKIP reason: the python package playwright is not installed")
        pytest.skip("playwright not installed")

    port = _free_port()
    log = ARTIFACTS / "ns-viewer.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # An RGBA view of another object than the default source (the first test object): the upload's source.
    upload = ARTIFACTS / "uploaded_chair.png"
    shutil.copyfile(sorted((trained_tiny.root / "data" / "img").rglob("*.png"))[-1], upload)
    cmd = [str(Path(sys.executable).parent / "ns-viewer"), "--load-config", str(viewer_run),
           "--viewer.websocket-port", str(port)]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    try:
        _wait_http(f"http://localhost:{port}", proc, log)
        shots = drive_viewer(f"http://localhost:{port}", ARTIFACTS, upload)
    finally:
        # The viewer (and anything it started) is in its own process group.
        with_group = proc.poll() is None
        if with_group:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for name, path in shots.items():
        print(f"viewer screenshot ({name}): {path}")
    frame = np.asarray(Image.open(shots["canvas_feature_pca"]).convert("RGB")).astype(np.int16)
    pixels = object_pixels(frame)
    assert len(pixels) > 100, f"no object in the rendered frame ({shots['canvas_feature_pca']})"
    quantised = {tuple(c) for c in (pixels // 24).tolist()}
    assert len(quantised) >= 4 and pixels.std(0).max() > 8, (
        f"feature_pca object pixels are (nearly) one colour: {len(quantised)} colour bins, "
        f"std {pixels.std(0)} ({shots['canvas_feature_pca']})"
    )
    rgb = np.asarray(Image.open(shots["canvas_rgb"]).convert("RGB")).astype(np.int16)
    changed = int((np.abs(frame - rgb).max(-1) > 12).sum())
    assert changed > 100, f"feature_pca frame looks like the rgb frame ({changed} pixels differ)"
