"""The HOCON subset reader on the authors' config syntax."""

from __future__ import annotations

import pytest

from featurenerf_ns.utils.hocon import as_bool, hocon_get, read_hocon
from featurenerf_ns.utils.io import DataError


def test_includes_merge_and_later_values_win(tmp_path):
    (tmp_path / "default.conf").write_text(
        """# base
model {
    use_encoder = True   # pyhocon reads True as a boolean string
    mlp_coarse { type = resnet, n_blocks = 3, d_hidden = 512 }
    encoder { backbone = resnet34 }
}
renderer { n_coarse = 64
  sched = [] }
"""
    )
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "a.conf").write_text(
        """include required("../default.conf")
// overrides
model {
    mlp_coarse { n_blocks = 5 }
    d_embed = 384
}
model.encoder.num_layers = 4
renderer.white_bkgd = False
data: { format = "feature_dino_256" }
list = [1, 2.5, "x"]
"""
    )
    conf = read_hocon(tmp_path / "exp" / "a.conf")
    assert conf["model"]["mlp_coarse"] == {"type": "resnet", "n_blocks": 5, "d_hidden": 512}
    assert hocon_get(conf, "model.encoder") == {"backbone": "resnet34", "num_layers": 4}
    assert hocon_get(conf, "model.d_embed") == 384 and hocon_get(conf, "model.missing.x", "d") == "d"
    assert as_bool(hocon_get(conf, "model.use_encoder"), "x") is True
    assert hocon_get(conf, "renderer") == {"n_coarse": 64, "sched": [], "white_bkgd": False}
    assert conf["data"]["format"] == "feature_dino_256" and conf["list"] == [1, 2.5, "x"]


@pytest.mark.parametrize(
    "text,problem",
    [
        ('include required("missing.conf")', "config file not found"),
        ("a = ${b}", "substitutions"),
        ("model { a = 1", "missing '}'"),
        ("= 3", "expected a key"),
    ],
)
def test_bad_configs_are_one_line_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(DataError, match=problem) as info:
        read_hocon(path)
    assert "\n" not in str(info.value)


def test_as_bool_refuses_non_booleans():
    assert as_bool("off", "k") is False and as_bool("YES", "k") is True
    with pytest.raises(ValueError, match="k must be a boolean"):
        as_bool("maybe", "k")
