import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from featurenerf_ns.transfer.cli import EvalConfig, run
from featurenerf_ns.transfer.data import CategoryData
from featurenerf_ns.transfer.sources import NeRFSource, OracleSource


def _check_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_teacher_baseline_end_to_end(toy_root, tmp_path):
    console = Console(record=True, width=200)
    paths = run(EvalConfig(task="keypoints", data=toy_root / "data" / "chair", output_dir=tmp_path), console)
    assert paths["json"] == tmp_path / "chair" / "keypoints_2d_cross-instance.json"
    result = json.loads(paths["json"].read_text())
    assert result["category"] == "chair" and result["synset"] == "03001627"
    assert result["thresholds"] == [0.9375, 1.875, 2.8125, 3.75]  # 2.5..10 px scaled to 48 px
    teacher = result["methods"]["teacher"]
    assert len(teacher["per_pair"]) == 12 == result["num_pairs"]
    pck = teacher["mean"]["pck"]
    assert list(pck) == ["0.9375", "1.875", "2.8125", "3.75"]
    per_pair = np.array([p["pck"] for p in teacher["per_pair"]], dtype=float)
    np.testing.assert_allclose(list(pck.values()), np.nanmean(per_pair, axis=0))
    assert {"src", "trg", "view", "pred_kp", "gt_kp", "num_keypoints"} <= set(teacher["per_pair"][0])
    table = paths["markdown"].read_text()
    row = next(line for line in table.splitlines() if line.startswith("| teacher"))
    assert [c.strip() for c in row.split("|")[2:6]] == [f"{100 * v:.1f}" for v in pck.values()]
    printed = console.export_text()
    assert "teacher" in printed and f"{100 * pck['3.75']:.1f}" in printed
    _check_png(paths["curve"])
    _check_png(paths["qualitative"])


def test_parts_with_random_pairs_and_oracle(toy_root, tmp_path):
    cfg = EvalConfig(
        task="parts", data=toy_root / "data", category="chair", baselines=("teacher", "oracle"),
        pairs="random", num_pairs=5, seed=2, output_dir=tmp_path, num_vis=2,
    )  # fmt: skip
    paths = run(cfg, Console(width=200))
    result = json.loads(paths["json"].read_text())
    assert result["pairs"] == "random" and result["seed"] == 2 and result["num_pairs"] == 5
    assert result["methods"]["oracle"]["mean"]["miou"] > 0.97
    assert 0 < result["methods"]["teacher"]["mean"]["miou"] < result["methods"]["oracle"]["mean"]["miou"]
    assert all("part_ious" in p for p in result["methods"]["teacher"]["per_pair"])
    _check_png(paths["curve"])


def test_3d_skips_the_teacher_and_needs_a_3d_method(toy_root, tmp_path):
    with pytest.raises(ValueError, match="no method can run"):
        run(EvalConfig(task="keypoints", space="3d", data=toy_root / "data" / "chair", output_dir=tmp_path))
    paths = run(
        EvalConfig(
            task="parts", space="3d", data=toy_root / "data" / "chair", baselines=("teacher", "oracle"),
            output_dir=tmp_path,
        ),
        Console(width=200),
    )  # fmt: skip
    result = json.loads(paths["json"].read_text())
    assert list(result["methods"]) == ["oracle"]
    assert "teacher" in result["skipped_methods"]
    _check_png(paths["qualitative"])


class FakeTrainedFeatureNeRF:
    """Implements the model API NeRFSource programs against, with oracle features inside."""

    calls: list = []

    def __init__(self, data_root: Path, scale: float = 1.0):
        self.data_root = Path(data_root)
        self.synset = "03001627"
        self.category = "chair"
        self.image_size = (48, 48)
        self._oracle = OracleSource(CategoryData(self.data_root, "chair"))
        self.scale = scale

    @classmethod
    def load(cls, config_path: Path, device=None):
        return cls(Path(config_path).read_text().strip(), scale=2.0 if "b" in Path(config_path).stem else 1.0)

    def encode(self, split, obj_id, views):
        FakeTrainedFeatureNeRF.calls.append(("encode", split, obj_id, tuple(views)))
        return {"obj_id": obj_id, "view": views[0]}

    def render(self, cond, split, obj_id, view, outputs=("v_nerf",)):
        FakeTrainedFeatureNeRF.calls.append(("render", cond["view"], obj_id, view, tuple(outputs)))
        feat = self._oracle.feature_map(obj_id, view)
        out = {"v_nerf": feat * self.scale, "feature": feat[..., :4], "rgb": torch.zeros(48, 48, 3)}
        return {k: out[k] for k in outputs}

    def query(self, cond, points):
        assert points.dtype == torch.float32 and points.shape[1] == 3
        feat = self._oracle.point_features(cond["obj_id"], cond["view"], points)
        return {"density": torch.ones(len(points), 1), "v_nerf": feat, "feature": feat[:, :4]}


@pytest.fixture()
def fake_api(monkeypatch, toy_root, tmp_path):
    module = types.ModuleType("featurenerf_ns.model.api")
    module.TrainedFeatureNeRF = FakeTrainedFeatureNeRF
    monkeypatch.setitem(sys.modules, "featurenerf_ns.model.api", module)
    configs = []
    for name in ("a", "b"):
        p = tmp_path / "runs" / name / "config.yml"
        p.parent.mkdir(parents=True)
        p.write_text(str(toy_root / "data"))
        configs.append(p)
    FakeTrainedFeatureNeRF.calls = []
    return configs


def test_models_through_the_api_contract(fake_api, tmp_path):
    a, b = fake_api
    cfg = EvalConfig(
        task="keypoints", setting="novel-view", load_config=a, compare_configs=(b,), baselines=("teacher",),
        output_dir=tmp_path / "out", method_names=("model-a",),
    )  # fmt: skip
    paths = run(cfg, Console(width=200))
    result = json.loads(paths["json"].read_text())
    names = list(result["methods"])
    assert names[0] == "model-a" and names[1].endswith("runs/b (v_nerf)") and names[2] == "teacher"
    assert result["methods"]["model-a"]["mean"]["pck"]["3.75"] == 1.0
    renders = [c for c in FakeTrainedFeatureNeRF.calls if c[0] == "render"]
    # novel view: conditioned on the source view, rendered at the target view
    pairs = json.loads((Path(fake_api[0].read_text()) / "splits" / "03001627.json").read_text())["cross_view_pairs"]
    p0 = pairs[0]
    assert ("render", p0["src_view"], p0["model_id"], p0["trg_view"], ("v_nerf",)) in renders
    assert ("render", p0["src_view"], p0["model_id"], p0["src_view"], ("v_nerf",)) in renders


def test_nerf_source_3d_and_distilled_feature(fake_api, toy_data):
    src = NeRFSource.from_config(fake_api[0], feature="feature")
    assert src.name == "featurenerf (feature)"
    fmap = src.feature_map(toy_data.objects()[0], 1)
    assert fmap.shape == (48, 48, 4)
    pts = torch.from_numpy(toy_data.kp_3d(toy_data.objects()[0])[0][:, :3]).float()
    assert src.point_features(toy_data.objects()[0], 0, pts).shape == (len(pts), 4)
    src.point_features(toy_data.objects()[0], 0, pts.clone())  # cached by value
    encodes = [c for c in FakeTrainedFeatureNeRF.calls if c[0] == "encode"]
    assert len(encodes) == 2
    with pytest.raises(ValueError):
        NeRFSource(src.model, feature="rgb")


def test_console_script(toy_root, tmp_path):
    exe = Path(sys.executable).parent / "featurenerf-eval"
    if not exe.exists():
        pytest.skip("featurenerf-eval is not installed (pip install -e .)")
    data = tmp_path / "data"
    shutil.copytree(toy_root / "data", data)
    proc = subprocess.run(
        [str(exe), "parts", "--data", str(data / "chair"), "--output-dir", str(tmp_path / "out"), "--num-pairs", "3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "chair" / "parts_2d_cross-instance.json").read_text())
    assert result["num_pairs"] == 3 and "teacher" in result["methods"]
    assert "pairs/s" in proc.stdout
    bad = subprocess.run([str(exe), "parts", "--data", str(tmp_path / "nowhere" / "chair")], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "nowhere" in bad.stderr
