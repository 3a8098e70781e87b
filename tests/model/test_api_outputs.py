"""Output names are checked where users name them: a typo is an error, not an output silently missing."""

from __future__ import annotations

import pytest
import torch

from featurenerf_ns.model.api import TrainedFeatureNeRF
from featurenerf_ns.model.field import FIELD_OUTPUTS, RENDER_OUTPUTS, check_outputs
from featurenerf_ns.utils.io import UserError


def test_check_outputs_names_the_typo_and_the_choices():
    assert check_outputs(("rgb", "v_nerf"), RENDER_OUTPUTS, "render") == {"rgb", "v_nerf"}
    assert check_outputs("rgb", RENDER_OUTPUTS, "render") == {"rgb"}
    with pytest.raises(UserError, match=r"unknown render output 'vnerf': choose from .*'v_nerf'"):
        check_outputs(("rgb", "vnerf"), RENDER_OUTPUTS, "render")
    with pytest.raises(UserError, match="unknown query output 'depth'"):
        check_outputs(("depth",), FIELD_OUTPUTS, "query")


def test_the_api_refuses_unknown_output_names(trained_tiny):
    tf = TrainedFeatureNeRF.load(trained_tiny.config, device="cpu")
    obj = tf.objects("test")[0].obj_id
    cond = tf.encode("test", obj, [0])
    camera = tf.camera("test", obj, 1)
    with pytest.raises(UserError, match="'vnerf'"):
        tf.render(cond, "test", obj, 1, outputs=("rgb", "vnerf"))
    with pytest.raises(UserError, match="'vnerf'"):
        tf.render_view(cond, camera, outputs=("vnerf",))
    with pytest.raises(UserError, match="'vnerf'"):
        tf.render_rays(cond, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), outputs=("vnerf",))
    with pytest.raises(UserError, match="'colour'"):
        tf.query(cond, torch.zeros(2, 3), outputs=("colour",))
    # The names that exist all come back.
    assert {"rgb", "v_nerf", "depth", "accumulation"} <= set(tf.render_view(cond, camera, outputs="rgb v_nerf".split()))
    assert set(tf.query(cond, torch.zeros(2, 3), outputs=("density", "v_nerf"))) == {"density", "v_nerf"}
