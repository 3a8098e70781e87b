"""The FeatureNeRF viewer panel on a trained tiny model, without a browser: wiring, outputs, caching, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerElement
from PIL import Image

import featurenerf_ns.viewer.panel as panel_module
from featurenerf_ns.viewer.colors import label_palette
from featurenerf_ns.viewer.panel import IMAGE_FILE, OUTPUTS, FeatureNeRFViewerPanel

pytestmark = pytest.mark.slow


@pytest.fixture()
def panel(viewer_pipeline) -> FeatureNeRFViewerPanel:
    p = viewer_pipeline.FeatureNeRF
    p.a_source_object.value = p.a_source_object.options[0]
    p.c_source_views.value = "0"
    p.b_image_file.value = ""
    return p


def _camera(pipeline, index: int = 1):
    return pipeline.datamanager.eval_dataparser_outputs.cameras[index : index + 1].to(pipeline.model.device)


def test_panel_elements_found_by_the_viewer_in_order(viewer_pipeline):
    elements = parse_object(viewer_pipeline, ViewerElement, "Custom Elements")
    mine = [(path, e.name) for path, e in elements if path.startswith("Custom Elements/FeatureNeRF/")]
    names = [name for _, name in mine]
    assert names[:3] == ["Source object", "Image file", "Source views"]
    for label in ("Refresh PCA", "Reference object", "Reference view", "Show keypoints", "Pick similarity point",
                  "Similarity min", "Render views"):  # fmt: skip
        assert label in names
    controls = parse_object(viewer_pipeline, ViewerControl, "Custom Elements")
    assert any(c is viewer_pipeline.FeatureNeRF.viewer_control for _, c in controls)
    # No parameters: checkpoints keep their keys.
    assert not [k for k in viewer_pipeline.state_dict() if "FeatureNeRF" in k]


def test_outputs_keys_shapes_and_ranges(viewer_pipeline, panel):
    out = viewer_pipeline.model.get_outputs_for_camera(_camera(viewer_pipeline))
    assert list(out) == list(OUTPUTS)
    assert out["depth"].shape == (32, 32, 1) and out["accumulation"].shape == (32, 32, 1)
    for k in ("rgb", "feature_pca", "labels", "similarity"):
        assert out[k].shape == (32, 32, 3)
        assert out[k].min() >= 0.0 and out[k].max() <= 1.0, k  # the viewer does not clip 3-channel outputs
    assert out["feature_pca"].std() > 0  # features vary over the object
    palette = label_palette(len(panel._part_names))
    colours = out["labels"].reshape(-1, 3)
    # only palette colours (exact differences: cdist's matmul form leaves ~1e-4 round-off at zero distance)
    assert (colours[:, None] - palette[None]).abs().amax(-1).min(1).values.max() < 1e-6


def test_source_change_encodes_once_and_renders_are_stable(viewer_pipeline, panel):
    cam = _camera(viewer_pipeline)
    first = panel.render_outputs(cam)
    n = panel.encode_count
    again = panel.render_outputs(cam)
    assert panel.encode_count == n  # cached conditioning
    for k in OUTPUTS:
        assert torch.equal(first[k], again[k]), k  # fixed PCA basis, fixed sampling seed: no flicker
    panel.c_source_views.value = "1,2"
    panel._on_source_change()
    panel.render_outputs(cam)
    panel.render_outputs(cam)
    assert panel.encode_count == n + 1
    assert viewer_pipeline.model.default_conditioning.num_views == 2
    assert "views 1, 2" in panel.d_source_image.content and "data:image/png;base64," in panel.d_source_image.content


def test_rgb_alone_does_not_render_features(viewer_pipeline, panel, monkeypatch):
    requested = []
    real = panel_module.render_camera_anywhere

    def spy(model, cond, camera, outputs=frozenset({"rgb"})):
        requested.append(outputs)
        return real(model, cond, camera, outputs)

    monkeypatch.setattr(panel_module, "render_camera_anywhere", spy)
    out = panel.render_outputs(_camera(viewer_pipeline), frozenset({"rgb"}))
    assert requested[-1] == frozenset({"rgb"})
    assert out["feature_pca"].abs().sum() == 0  # not computed: black placeholder keeps the dropdown entry
    panel.render_outputs(_camera(viewer_pipeline), frozenset({"similarity"}))
    assert "v_nerf" in requested[-1]


def test_image_file_source_and_bad_path(viewer_pipeline, panel, tmp_path):
    cam = _camera(viewer_pipeline)
    panel.render_outputs(cam)
    rec = panel._splits["test"][1][1]
    image = tmp_path / "photo.png"
    Image.open(rec.image_paths[0]).save(image)
    n = panel.encode_count
    panel.b_image_file.value = str(image)
    panel._on_image_file()
    assert panel.a_source_object.value == IMAGE_FILE
    panel.render_outputs(cam, frozenset({"rgb"}))
    assert panel.encode_count == n + 1 and "photo.png" in panel.d_source_image.content
    panel.b_image_file.value = str(tmp_path / "missing.png")
    panel._on_image_file()
    panel.render_outputs(cam, frozenset({"rgb"}))
    panel.render_outputs(cam, frozenset({"rgb"}))
    assert panel.encode_count == n + 1  # previous source kept, bad input not retried every frame
    assert "missing.png" in panel.n_status.content and "not found" in panel.n_status.content


def test_similarity_peaks_at_the_query_point_and_keypoints_transfer(viewer_pipeline, panel):
    panel.render_outputs(_camera(viewer_pipeline, 0), frozenset({"similarity"}))
    point, feat = panel._query
    q = viewer_pipeline.model.query_points(viewer_pipeline.model.default_conditioning, point[None])["v_nerf"][0]
    assert torch.allclose(q, feat)
    positions, ids = panel.transferred_keypoints()
    assert positions is not None and positions.shape == (ids.shape[0], 3) and torch.isfinite(positions).all()


def test_render_views_writes_an_orbit(viewer_pipeline, panel, tmp_path):
    folder = panel.render_orbit("feature_pca", folder=tmp_path / "orbit")
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 24
    frames = [np.asarray(Image.open(p)) for p in pngs[:2]]
    assert frames[0].shape == (32, 32, 3) and not np.array_equal(frames[0], frames[1])
    assert str(folder) in panel.n_status.content
