"""Photos from outside the data: reading (RGBA, RGB + mask), cropping, the canonical camera, encoding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from featurenerf_ns.geometry import focal_from_fov, project
from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.photo import (
    PhotoCamera,
    crop_photo,
    margin_for_fill,
    mask_box,
    photo_json,
    read_photo,
    read_photo_camera,
)
from featurenerf_ns.utils.io import DataError, UserError


def _blob(h: int = 60, w: int = 100, box=(55, 12, 84, 31)) -> np.ndarray:
    """RGBA canvas with an opaque textured rectangle at inclusive ``box`` (x0, y0, x1, y1)."""
    rgba = np.zeros((h, w, 4), np.uint8)
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    rgba[y0 : y1 + 1, x0 : x1 + 1, 0] = (xx * 7 % 256).astype(np.uint8)
    rgba[y0 : y1 + 1, x0 : x1 + 1, 1] = (yy * 11 % 256).astype(np.uint8)
    rgba[y0 : y1 + 1, x0 : x1 + 1, 2] = 200
    rgba[y0 : y1 + 1, x0 : x1 + 1, 3] = 255
    return rgba


def test_read_photo_rgba_and_rgb_plus_mask_agree(tmp_path):
    rgba = _blob()
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "b.png")
    Image.fromarray(rgba[..., 3]).save(tmp_path / "b_mask.png")
    a = read_photo(tmp_path / "a.png")
    b = read_photo(tmp_path / "b.png", tmp_path / "b_mask.png")
    np.testing.assert_array_equal(a, rgba)
    np.testing.assert_array_equal(b, rgba)


@pytest.mark.parametrize(
    "case, problem",
    [
        ("rgb_no_mask", "has no alpha channel"),
        ("empty_alpha", "the mask is empty"),
        ("mask_size", "mask is 10x10 but the image"),
        ("missing", "image not found"),
        ("folder", "is a folder"),
    ],
)
def test_read_photo_errors_name_the_file(tmp_path, case, problem):
    rgba = _blob()
    photo, mask = tmp_path / "p.png", None
    if case == "rgb_no_mask":
        Image.fromarray(rgba[..., :3]).save(photo)
    elif case == "empty_alpha":
        rgba[..., 3] = 0
        Image.fromarray(rgba).save(photo)
    elif case == "mask_size":
        Image.fromarray(rgba[..., :3]).save(photo)
        mask = tmp_path / "m.png"
        Image.fromarray(np.full((10, 10), 255, np.uint8)).save(mask)
    elif case == "folder":
        photo = tmp_path
    with pytest.raises(DataError) as e:
        read_photo(photo, mask)
    assert problem in str(e.value)
    assert str(mask if case == "mask_size" else photo) in str(e.value)


def test_read_photo_camera_both_forms_and_round_trip(tmp_path):
    m = np.eye(4)
    m[:3, 3] = (0.0, 0.0, 1.3)
    (tmp_path / "one.json").write_text(json.dumps({"camera_angle_x": 0.7, "transform_matrix": m.tolist()}))
    one = read_photo_camera(tmp_path / "one.json")
    assert one.num_views == 1 and one.camera_angle_x == 0.7
    np.testing.assert_array_equal(one.transform_matrix[0], m)
    two = PhotoCamera(np.stack([m, 2 * m]), 0.5)
    (tmp_path / "two.json").write_text(photo_json(two))
    back = read_photo_camera(tmp_path / "two.json")
    np.testing.assert_array_equal(back.transform_matrix, two.transform_matrix)
    (tmp_path / "bad.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": [{"transform_matrix": [1, 2]}]}))
    with pytest.raises(UserError, match="bad.json"):
        read_photo_camera(tmp_path / "bad.json")
    with pytest.raises(UserError, match="camera_angle_x"):
        PhotoCamera(m, 4.0)


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.4])
def test_crop_centres_the_object_and_fills_the_crop_as_asked(margin):
    box = (55, 12, 84, 31)  # 30 x 20 px, off-centre in a 60 x 100 canvas
    crop, t = crop_photo(_blob(box=box), 64, margin)
    assert crop.shape == (64, 64, 4) and crop.dtype == np.uint8
    x0, y0, x1, y1 = mask_box(crop[..., 3])
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    np.testing.assert_allclose(centre, [31.5, 31.5], atol=1.0)
    assert (x1 + 1 - x0) / 64 == pytest.approx(1 / (1 + 2 * margin), abs=2 / 64)
    # The crop's transform maps the object's corners onto the crop's box.
    np.testing.assert_allclose(t.to_crop(np.array([[box[0], box[1]]])), [[x0, y0]], atol=1.0)
    assert margin_for_fill(1 / (1 + 2 * margin)) == pytest.approx(margin)


@pytest.fixture(scope="module")
def tf(trained_tiny) -> TrainedFeatureNeRF:
    return TrainedFeatureNeRF.load(trained_tiny.config, device="cpu")


def test_canonical_camera_is_the_training_cameras_typical_one(tf):
    cams = tf.datamanager.train_dataparser_outputs.cameras
    radius = cams.camera_to_worlds[:, :3, 3].norm(dim=-1)
    cam = tf.canonical_camera(elevation_deg=20.0, azimuth_deg=90.0)
    c2w = cam.transform_matrix[0]
    assert np.linalg.norm(c2w[:3, 3]) == pytest.approx(float(radius.median()), rel=1e-6)
    assert math.degrees(math.asin(c2w[1, 3] / np.linalg.norm(c2w[:3, 3]))) == pytest.approx(20.0)
    assert c2w[0, 3] > 0 and abs(c2w[2, 3]) < 1e-9  # azimuth 90: on +X
    # It looks at the origin: the origin projects onto the image centre.
    H, W = tf.image_size
    uv, depth = project(np.zeros((1, 3)), c2w, focal_from_fov(cam.camera_angle_x, W), (H, W))
    np.testing.assert_allclose(uv[0], [W / 2, H / 2], atol=1e-6)
    assert depth[0] == pytest.approx(np.linalg.norm(c2w[:3, 3]))
    fov = 2 * torch.atan(cams.width[:, 0] / (2 * cams.fx[:, 0]))
    assert cam.camera_angle_x == pytest.approx(float(fov.median()), rel=1e-5)


def test_a_dataset_view_as_a_photo_with_its_camera_encodes_like_the_dataset(tf, trained_tiny):
    rec = tf.objects("test")[0]
    layout = CategoryLayout(tf.data_root, tf.synset)
    meta = json.loads(layout.camera_json(rec.obj_id).read_text())
    image = sorted(layout.image_dir(rec.obj_id).iterdir())[1]
    photo = read_photo(image)
    camera = PhotoCamera(np.asarray(meta["frames"][1]["transform_matrix"]), meta["camera_angle_x"])
    ours = tf.encode_image(photo, camera)
    data = tf.encode("test", rec.obj_id, [1])
    points = torch.rand(64, 3) - 0.5
    a, b = tf.query(ours, points), tf.query(data, points)
    torch.testing.assert_close(a["v_nerf"], b["v_nerf"], rtol=1e-5, atol=1e-5)
    # Another view's camera with the same pixels gives another field: the camera is used.
    other = PhotoCamera(np.asarray(meta["frames"][2]["transform_matrix"]), meta["camera_angle_x"])
    c = tf.query(tf.encode_image(photo, other), points)
    assert (c["v_nerf"] - b["v_nerf"]).abs().max() > 1e-3


def test_photo_errors(tf):
    rgba = _blob()
    cam = tf.canonical_camera()
    with pytest.raises(UserError, match="aspect ratio"):
        tf.prepare_image(rgba, cam)
    with pytest.raises(UserError, match="2 photos without cameras"):
        tf.prepare_image(np.stack([rgba, rgba]))
    with pytest.raises(UserError, match="1 photo.s. but 2 camera"):
        tf.prepare_image(rgba[:, :60], PhotoCamera(np.stack([cam.transform_matrix[0]] * 2), cam.camera_angle_x))


def test_a_photo_is_cropped_to_the_training_fill_and_renders_from_its_camera(tf):
    rec = tf.objects("test")[0]
    view = tf.load_rgba("test", rec.obj_id, [0])[0]
    small = (view.numpy() * 255).astype(np.uint8)
    # A "phone" photo: the object pasted off-centre, at 3x size, on a wide canvas.
    big = np.asarray(Image.fromarray(small).resize((96, 96), Image.Resampling.BILINEAR))
    canvas = np.zeros((120, 200, 4), np.uint8)
    canvas[10:106, 90:186] = big
    prepared = tf.prepare_image(canvas)
    assert prepared.rgba.shape == (1, *tf.image_size, 4) and prepared.crop is not None
    # The object's box (in the photo) spans the training views' typical fill of the crop (thin parts such as
    # chair legs may fade below the mask threshold at the model's size, so the photo's box is the measure).
    x0, y0, x1, y1 = mask_box(canvas[..., 3])
    fill = max(x1 + 1 - x0, y1 + 1 - y0) * prepared.crop.k / tf.image_size[0]
    assert fill == pytest.approx(tf.typical_object_fill(), abs=1.0 / tf.image_size[0])
    centre = prepared.crop.to_crop(np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]))[0]
    np.testing.assert_allclose(centre, [(tf.image_size[1] - 1) / 2, (tf.image_size[0] - 1) / 2], atol=0.5)
    cond = tf.encode_image(prepared)
    out = tf.render_view(cond, tf.photo_cameras(prepared.camera), ("rgb",))
    alpha = torch.from_numpy(prepared.rgba[0, ..., 3] > 127)
    acc = out["accumulation"][..., 0]
    # The field is where the photo's object is: opacity on the mask clearly above off the mask.
    assert float(acc[alpha].mean()) > float(acc[~alpha].mean()) + 0.2
