import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from featurenerf_ns.transfer.cli import EvalConfig, run
from featurenerf_ns.transfer.data import CategoryData
from featurenerf_ns.transfer.sources import NeRFSource
from tests.conftest import run_headless

BIN = Path(sys.executable).parent


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


@pytest.fixture()
def api_calls(monkeypatch):
    """Records what featurenerf-eval asks of the real model API: (encode, obj, views) and (render, obj, the
    conditioning's views, the rendered view, outputs)."""
    from featurenerf_ns.model.api import TrainedFeatureNeRF

    calls, views_of = [], {}
    encode, render = TrainedFeatureNeRF.encode, TrainedFeatureNeRF.render

    def spy_encode(self, split, obj_id, views):
        cond = encode(self, split, obj_id, views)
        views_of[id(cond)] = tuple(views)
        calls.append(("encode", obj_id, tuple(views)))
        return cond

    def spy_render(self, cond, split, obj_id, view, outputs=("v_nerf",), *args, **kwargs):
        calls.append(("render", obj_id, views_of[id(cond)], view, tuple(outputs)))
        return render(self, cond, split, obj_id, view, outputs, *args, **kwargs)

    monkeypatch.setattr(TrainedFeatureNeRF, "encode", spy_encode)
    monkeypatch.setattr(TrainedFeatureNeRF, "render", spy_render)
    return calls


@pytest.mark.slow
def test_models_through_the_api(trained_tiny, api_calls, tmp_path):
    """A real tiny model and a comparison run: novel views are conditioned on the source view only, and a model
    scored twice scores the same."""
    config = trained_tiny.config
    cfg = EvalConfig(
        task="keypoints", setting="novel-view", load_config=config, compare_configs=(config,), baselines=("teacher",),
        output_dir=tmp_path / "out", method_names=("model-a", "model-b"), num_pairs=3, num_vis=0,
    )  # fmt: skip
    paths = run(cfg, Console(width=200))
    result = json.loads(paths["json"].read_text())
    assert list(result["methods"]) == ["model-a", "model-b", "teacher"]
    a, b = (result["methods"][m]["mean"] for m in ("model-a", "model-b"))
    assert a["pck"] == b["pck"] and a["num_pairs"] == b["num_pairs"] == 3
    pairs = json.loads((trained_tiny.data.parent / "splits" / "03001627.json").read_text())["cross_view_pairs"]
    renders = [c for c in api_calls if c[0] == "render"]
    for p in pairs[:3]:  # conditioned on the source view, rendered at the source and at the target view
        assert ("render", p["model_id"], (p["src_view"],), p["trg_view"], ("v_nerf",)) in renders
        assert ("render", p["model_id"], (p["src_view"],), p["src_view"], ("v_nerf",)) in renders
    assert all(len(c[2]) == 1 for c in renders)  # one source view each


@pytest.mark.slow
def test_nerf_source_3d_and_distilled_feature(trained_tiny, api_calls):
    src = NeRFSource.from_config(trained_tiny.config, feature="feature")
    assert src.name == "featurenerf (feature)"
    data = CategoryData(trained_tiny.data.parent, "chair")
    obj = data.objects("test")[0]
    dim = src.model.model.feature_dim
    fmap = src.feature_map(obj, 1)
    assert fmap.shape == (32, 32, dim) and dim > 0
    pts = torch.from_numpy(data.kp_3d(obj)[0][:, :3]).float()
    feats = src.point_features(obj, 0, pts)
    assert feats.shape == (len(pts), dim)
    assert torch.equal(src.point_features(obj, 0, pts.clone()), feats)  # cached by value
    assert len([c for c in api_calls if c[0] == "encode"]) == 2  # views 1 and 0, each once
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
    assert bad.returncode == 2 and "nowhere" in bad.stderr


@pytest.mark.parametrize(("option", "value"), [("chunk", 0), ("num_pairs", 0), ("num_vis", -1)])
def test_out_of_range_counts_are_one_line_before_any_work(option, value, toy_root, tmp_path):
    from featurenerf_ns.utils.io import UserError

    cfg = EvalConfig(task="parts", data=toy_root / "data" / "chair", output_dir=tmp_path, **{option: value})
    with pytest.raises(UserError, match=f"^--{option.replace('_', '-')} {value}: must be at least"):
        run(cfg, Console())
    assert not any(tmp_path.iterdir())


def test_missing_model_config_is_one_line(tmp_path):
    exe = Path(sys.executable).parent / "featurenerf-eval"
    for target, problem in ((tmp_path / "missing" / "config.yml", "not found"), (tmp_path, "is a directory")):
        proc = subprocess.run([str(exe), "parts", "--load-config", str(target)], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: {target}: {problem}: give the config.yml of an ns-train run (outputs/<category>/<method>/<time>/)"
        )


@pytest.mark.slow
def test_eval_reads_the_runs_split_and_keeps_every_result(trained_tiny, tmp_path):
    """A run trained with a custom --splits-file whose test objects differ from the default file's is evaluated, with
    no data options, on exactly its own test objects; the JSON says where split, data and teacher came from and which
    checkpoint it measured. Results go under the run's folder, and a second result never replaces the first."""
    default = json.loads((trained_tiny.data.parent / "splits" / "03001627.json").read_text())
    test_ids = default["train"][:3]
    inst_pairs = list(itertools.pairwise(test_ids))
    custom = {
        "train": default["train"][3:] + default["test"], "val": default["val"], "test": test_ids,
        "cross_inst_pairs": [{"src": a, "trg": b, "view": 1} for a, b in inst_pairs],
        "cross_view_pairs": [{"model_id": test_ids[0], "src_view": 0, "trg_view": 2}],
    }  # fmt: skip
    assert not set(test_ids) & set(default["test"])
    split_file = tmp_path / "custom_split.json"
    split_file.write_text(json.dumps(custom))
    out = tmp_path / "outputs"
    cmd = [str(BIN / "ns-train"), "featurenerf-tiny", "--data", str(trained_tiny.data), "--output-dir", str(out),
           "--timestamp", "custom", "--max-num-iterations", "2", "--pipeline.datamanager.eval-num-triples", "1",
           "featurenerf-data", "--splits-file", str(split_file)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = out / "chair" / "featurenerf-tiny" / "custom" / "config.yml"

    def evaluate(*extra: str) -> None:  # headless: the viewer package is never imported
        args = ["parts", "--load-config", str(config), "--baselines", "chance", "--num-vis", "0", *extra]
        run_headless("featurenerf_ns.transfer.cli", args, cwd=tmp_path, timeout=600)

    evaluate()
    first = config.parent / "transfer" / "parts_2d_cross-instance.json"
    result = json.loads(first.read_text())
    prov = result["provenance"]
    assert prov["split_file"] == {"path": str(split_file), "from": "run"}
    assert prov["data_root"] == {"path": str(trained_tiny.data.parent), "from": "run"}
    assert prov["models"] == [{"name": "featurenerf-tiny/custom (v_nerf)", "config": str(config), "checkpoint_step": 1}]
    assert prov["command"].split()[1:4] == ["parts", "--load-config", str(config)]
    for method in result["methods"].values():
        evaluated = {(p["src"], p["trg"]) for p in method["per_pair"]}
        assert evaluated == set(inst_pairs)
    before = first.read_bytes()

    evaluate()  # the same benchmark again: a second result beside the first
    assert first.read_bytes() == before
    second = json.loads((config.parent / "transfer" / "parts_2d_cross-instance-2.json").read_text())
    assert second["methods"].keys() == result["methods"].keys()

    shared = tmp_path / "shared"  # two models into one folder: two results, each naming its model
    evaluate("--output-dir", str(shared))
    args = [str(BIN / "featurenerf-eval"), "parts", "--load-config", str(trained_tiny.config), "--output-dir",
            str(shared), "--num-vis", "0", "--num-pairs", "2"]  # fmt: skip
    assert subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600).returncode == 0
    results = [json.loads((shared / "chair" / n).read_text()) for n in ("parts_2d_cross-instance.json",
                                                                         "parts_2d_cross-instance-2.json")]  # fmt: skip
    assert [r["provenance"]["models"][0]["config"] for r in results] == [str(config), str(trained_tiny.config)]
    assert results[1]["provenance"]["split_file"]["path"] == str(trained_tiny.data.parent / "splits" / "03001627.json")

    evaluate("--output-dir", str(shared), "--overwrite")  # replaces the first, adds nothing
    assert sorted(p.name for p in (shared / "chair").glob("*.json")) == [
        "parts_2d_cross-instance-2.json", "parts_2d_cross-instance.json"]  # fmt: skip
