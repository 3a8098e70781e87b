"""Every malformed input the commands can meet (issue 16.5), one table.

Each row copies a small, valid workspace (a generated chair category with a tiny-DINO teacher cache and a
previous ``featurenerf-eval`` report), breaks one thing in it and runs the real command: our console scripts through
their entrypoints in this process; nerfstudio's ``ns-eval`` entrypoint and ``ns-train`` up to the end of its
preflight in this process, ending in the plugin's ``sys.excepthook``; as processes, ``ns-train`` with a fault that
shows at the first training step and the command that must meet folder permissions even when the tests run as root.
Each must end with exit status 2 and exactly one line on stderr, ``error: <file or option>: <problem>``, and leave
every file that was there before as it was, with no temporary file behind (:mod:`featurenerf_ns.utils.errors`).
A full disk is a small tmpfs (mounting one needs root; elsewhere those rows skip and say why).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
import tyro
from PIL import Image

from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.synthetic.meshio import read_labeled_ply
from featurenerf_ns.utils.io import UserError
from tests.fs_helpers import run_unprivileged, snapshot, temporaries, tiny_filesystem
from tests.teachers.teacher_helpers import TINY_ARCH, tiny_vit

BIN = Path(sys.executable).parent
SYN = "03001627"
SIZE = 32
TEACHER = "dino_feat_256"


# ---------------------------------------------------------------------------------------------- the workspace
@dataclass(frozen=True)
class Workspace:
    """A copy of the valid inputs and outputs that one row breaks."""

    root: Path
    parity: Path
    """The authors' parity fixture (a real checkpoint of theirs; read, never written)."""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def chair(self) -> Path:
        return self.data / "chair"

    @property
    def layout(self) -> CategoryLayout:
        return CategoryLayout(self.data, SYN)

    @property
    def split(self) -> dict:
        return json.loads(self.layout.split_file().read_text())

    @property
    def train(self) -> str:
        """The first training object."""
        return self.split["train"][0]

    @property
    def pair(self) -> dict:
        """The first cross-instance pair of the split."""
        return self.split["cross_inst_pairs"][0]

    @property
    def weights(self) -> Path:
        return self.root / "weights" / "tiny_dino.pth"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def cache(self) -> Path:
        return self.data / TEACHER / SYN

    def teacher_args(self, *extra: str) -> list[str]:
        arch = [str(x) for kv in TINY_ARCH.items() for x in kv]
        return ["dino", "--data", str(self.chair), "--teacher.weights", str(self.weights), "--teacher.arch", *arch,
                "--teacher.input-size", str(SIZE), "--no-progress", *extra]  # fmt: skip

    def eval_args(self, *extra: str) -> list[str]:
        return ["parts", "--data", str(self.chair), "--output-dir", str(self.out), "--num-vis", "1", *extra]

    def annotate_args(self, *extra: str) -> list[str]:
        return ["--data", str(self.chair), "--meshes", str(self.root / "meshes"), "--shapenet-part",
                str(self.root / "partseg"), "--objects", self.train, *extra]  # fmt: skip

    def synth_args(self, root: Path, *extra: str, objects: int = 3, views: int = 2) -> list[str]:
        return ["--root", str(root), "--num-objects", str(objects), "--num-views", str(views), "--image-size",
                str(SIZE), "--num-pairs", "4", "--workers", "0", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """4 chairs x 3 views x 32 px with a tiny-DINO cache, the mesh and part inputs of featurenerf-annotate, and a
    featurenerf-eval report in out/."""
    from featurenerf_ns.synthetic.cli import entrypoint as synth
    from featurenerf_ns.teachers.cli import entrypoint as teacher
    from featurenerf_ns.transfer.cli import entrypoint as evaluate

    ws = Workspace(tmp_path_factory.mktemp("bad_inputs"), Path())
    synth(ws.synth_args(ws.data, objects=4, views=3))
    ws.weights.parent.mkdir()
    torch.save(tiny_vit().state_dict(), ws.weights)
    teacher(ws.teacher_args())
    evaluate(ws.eval_args())
    mesh, _ = read_labeled_ply(ws.layout.mesh(ws.train))
    (ws.root / "meshes").mkdir()
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(ws.root / "meshes" / f"{ws.train}.obj")
    with np.load(ws.layout.part_3d(ws.train)) as f:
        for sub, name, arr, fmt in (("points", "pts", f["pts"], "%.6f"), ("points_label", "seg", f["labels"], "%d")):
            (ws.root / "partseg" / SYN / sub).mkdir(parents=True)
            np.savetxt(ws.root / "partseg" / SYN / sub / f"{ws.train}.{name}", arr, fmt=fmt)
    return ws.root


# ---------------------------------------------------------------------------------------------- the commands
def _uncaught(error: BaseException) -> None:
    """What the interpreter does with an exception that leaves the program: ``sys.excepthook``, which must be the
    plugin's (installed when nerfstudio discovered the plugin's dataparsers, as in its own commands)."""
    assert getattr(sys.excepthook, "_featurenerf", False), "nerfstudio's plugin discovery did not install the hook"
    sys.excepthook(type(error), error, error.__traceback__)


def _ns_train(args: list[str]) -> None:
    """``ns-train featurenerf-tiny <args>`` as far as nerfstudio's ``main`` goes before training: it parses the
    options, then ``config.save_config()`` runs the preflight and writes the run folder."""
    from featurenerf_ns.method_configs import FeatureNeRFTrainerConfig, featurenerf_tiny

    config = tyro.cli(FeatureNeRFTrainerConfig, default=copy.deepcopy(featurenerf_tiny.config), args=args)
    config.pipeline.datamanager.data = config.data
    config.set_timestamp()
    try:
        config.save_config()
    except UserError as e:
        _uncaught(e)


def _ns_eval(args: list[str]) -> None:
    """nerfstudio's ``ns-eval`` entrypoint."""
    from nerfstudio.scripts.eval import entrypoint

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["ns-eval", *args])
        try:
            entrypoint()
        except UserError as e:
            _uncaught(e)


def _entrypoint(name: str) -> Callable[[list[str]], None]:
    if name.startswith("ns-"):
        return {"ns-train": _ns_train, "ns-eval": _ns_eval}[name]
    module = {
        "featurenerf-synth": "featurenerf_ns.synthetic.cli",
        "featurenerf-teacher": "featurenerf_ns.teachers.cli",
        "featurenerf-eval": "featurenerf_ns.transfer.cli",
        "featurenerf-annotate": "featurenerf_ns.transfer.annotate",
        "featurenerf-edit": "featurenerf_ns.transfer.edit",
        "featurenerf-import": "featurenerf_ns.model.import_cli",
    }[name]
    return __import__(module, fromlist=["entrypoint"]).entrypoint


@dataclass(frozen=True)
class Run:
    """How a row runs its command and what the one line must say."""

    command: str
    args: list[str]
    named: str
    """What the line names first: a file or an option (``error: <named>: ...``)."""
    problem: str
    """Words of the problem that the line must contain."""
    inside: bool = False
    """``named`` is a folder and the line names a file in it (where the disk filled up)."""
    process: str | None = None
    """Run as a process: ``"plain"``, or ``"unprivileged"`` (file permissions apply, even as root)."""


# ---------------------------------------------------------------------------------------------- breaking things
def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes())
    return path


def _to_folder(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    return path


def _to_file(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.write_text("not a folder")
    return path


def _edit_json(path: Path, edit: Callable[[dict], None]) -> Path:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))
    return path


def _nan_camera(ws: Workspace, obj: str) -> Path:
    return _edit_json(
        ws.layout.camera_json(obj), lambda c: c["frames"][1]["transform_matrix"][2].__setitem__(3, float("nan"))
    )


def _first_image(ws: Workspace, obj: str) -> Path:
    return ws.layout.image_dir(obj) / "000.png"


def _uncached(ws: Workspace, obj: str) -> None:
    """As if extraction had stopped before ``obj`` (so the teacher reads its images again)."""
    (ws.cache / f"{obj}.npy").unlink()


def _save_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _full_disk(folder: Path, stack: contextlib.ExitStack, free: int) -> Path:
    return stack.enter_context(tiny_filesystem(folder, free))


def _read_only(folder: Path, stack: contextlib.ExitStack) -> Path:
    """No write permission on ``folder`` and every folder in it (until the row ends)."""
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    for p in folders:
        p.chmod(0o555)
        stack.callback(p.chmod, 0o755)
    return folder


ROWS: dict[str, Callable[[Workspace, contextlib.ExitStack], Run]] = {}


def row(name: str):
    """Register a row: a function that breaks the workspace and says how to run the command."""

    def register(setup):
        ROWS[name] = setup
        return setup

    return register


# ------------------------------------------------------------------ featurenerf-synth
@row("synth/root-is-a-file")
def _(ws, stack):
    root = _to_file(ws.root / "synth")
    return Run("featurenerf-synth", ws.synth_args(root), str(root), f"cannot write: {root} is a file, not a folder")


@row("synth/image-size")
def _(ws, stack):
    return Run("featurenerf-synth", ws.synth_args(ws.root / "synth", "--image-size", "30"), "--image-size 30",
               "must be a multiple of 4")  # fmt: skip


@row("synth/unknown-category")
def _(ws, stack):
    return Run("featurenerf-synth", ws.synth_args(ws.root / "synth", "--categories", "sofa"),
               "--categories sofa", "unknown category 'sofa'; known categories: chair (03001627)")  # fmt: skip


@row("synth/root-holds-other-data")
def _(ws, stack):
    (ws.data / "generator" / f"{SYN}.json").unlink()
    return Run("featurenerf-synth", ws.synth_args(ws.data), str(ws.data / "camera" / SYN), "did not make")


def _root_with_bottles(ws: Workspace) -> Path:
    """A data root that already holds another category (which a failed run must leave as it is)."""
    from featurenerf_ns.synthetic.cli import entrypoint

    root = ws.root / "synth"
    entrypoint(ws.synth_args(root, "--categories", "bottle", objects=2, views=1))
    return root


@row("synth/disk-full")
def _(ws, stack):
    root = _full_disk(_root_with_bottles(ws), stack, free=20_000)
    return Run("featurenerf-synth", ws.synth_args(root), str(root), "cannot write (No space left on device)", True)


@row("synth/no-write-permission")
def _(ws, stack):
    root = _read_only(_root_with_bottles(ws), stack)
    cmd = [str(BIN / "featurenerf-synth"), *ws.synth_args(root)]
    return Run("featurenerf-synth", cmd, str(root / "generator" / f"{SYN}.json"), "cannot write (Permission denied)",
               process="unprivileged")  # fmt: skip


# ------------------------------------------------------------------ featurenerf-teacher
@row("teacher/split-missing")
def _(ws, stack):
    ws.layout.split_file().unlink()
    return Run("featurenerf-teacher", ws.teacher_args(), str(ws.layout.split_file()), "file not found")


@row("teacher/split-truncated")
def _(ws, stack):
    return Run("featurenerf-teacher", ws.teacher_args(), str(_truncate(ws.layout.split_file())), "not valid JSON")


@row("teacher/split-is-a-folder")
def _(ws, stack):
    split = _to_folder(ws.layout.split_file())
    return Run("featurenerf-teacher", ws.teacher_args(), str(split), "is a folder, expected a JSON file")


@row("teacher/split-names-a-missing-object")
def _(ws, stack):
    _edit_json(ws.layout.split_file(), lambda split: split["train"].append("ghost"))
    return Run("featurenerf-teacher", ws.teacher_args(), str(ws.layout.image_dir("ghost")), "image folder not found")


@row("teacher/png-truncated")
def _(ws, stack):
    _uncached(ws, ws.train)
    png = _truncate(_first_image(ws, ws.train))
    return Run("featurenerf-teacher", ws.teacher_args(), str(png), "not a readable image")


@row("teacher/png-unreadable")
def _(ws, stack):
    _uncached(ws, ws.train)
    png = _garbage(_first_image(ws, ws.train))
    return Run("featurenerf-teacher", ws.teacher_args(), str(png), "not a readable image")


@row("teacher/png-of-another-size")
def _(ws, stack):
    _uncached(ws, ws.train)
    png = ws.layout.image_dir(ws.train) / "001.png"
    Image.new("RGBA", (16, 16)).save(png)
    return Run("featurenerf-teacher", ws.teacher_args(), str(png), "image is 16x16")


@row("teacher/cache-from-other-settings")
def _(ws, stack):
    return Run("featurenerf-teacher", ws.teacher_args("--teacher.layer", "8"), str(ws.cache / "teacher.json"),
               "teacher cache made with other settings (layer: 9 != 8")  # fmt: skip


@row("teacher/weights-missing")
def _(ws, stack):
    missing = ws.root / "nope.pth"
    return Run("featurenerf-teacher", ws.teacher_args("--teacher.weights", str(missing)), str(missing),
               "DINO weights file not found (--teacher.weights)")  # fmt: skip


@row("teacher/weights-truncated")
def _(ws, stack):
    return Run("featurenerf-teacher", ws.teacher_args("--overwrite"), str(_truncate(ws.weights)),
               "not a readable PyTorch state dict")  # fmt: skip


@row("teacher/weights-is-a-folder")
def _(ws, stack):
    return Run("featurenerf-teacher", ws.teacher_args("--teacher.weights", str(ws.root)), str(ws.root),
               "weights file not found (--teacher.weights)")  # fmt: skip


@row("teacher/output-folder-is-a-file")
def _(ws, stack):
    blocking = _to_file(ws.data / TEACHER)
    return Run("featurenerf-teacher", ws.teacher_args(), str(ws.cache), f"{blocking} is a file, not a folder")


@row("teacher/disk-full")
def _(ws, stack):
    for obj in ws.split["train"][1:] + ws.split["test"]:
        _uncached(ws, obj)  # three objects to extract, one page left for them
    _full_disk(ws.data / TEACHER, stack, free=6000)
    return Run("featurenerf-teacher", ws.teacher_args(), str(ws.cache), "cannot write (No space left on device)", True)


@row("teacher/bad-shard")
def _(ws, stack):
    return Run("featurenerf-teacher", ws.teacher_args("--shard", "2/2"), "--shard '2/2'", "expected 0 <= i < N")


@row("teacher/unknown-category")
def _(ws, stack):
    sofa = ws.data / "sofa"
    return Run("featurenerf-teacher", ws.teacher_args("--data", str(sofa)), str(sofa), "unknown category 'sofa'")


# ------------------------------------------------------------------ featurenerf-eval
@row("eval/data-missing")
def _(ws, stack):
    data = ws.root / "nowhere" / "chair"
    return Run("featurenerf-eval", ws.eval_args("--data", str(data)), str(data.parent), "no img/ folder")


@row("eval/split-truncated")
def _(ws, stack):
    return Run("featurenerf-eval", ws.eval_args(), str(_truncate(ws.layout.split_file())), "not valid JSON")


@row("eval/split-pair-names-a-missing-object")
def _(ws, stack):
    _edit_json(ws.layout.split_file(), lambda split: split["cross_inst_pairs"][0].__setitem__("trg", "ghost"))
    return Run(
        "featurenerf-eval",
        ws.eval_args(),
        str(ws.layout.split_file()),
        f"cross_inst_pairs names object 'ghost', which has no renders in {ws.layout.image_dir('ghost')}",
    )


@row("eval/split-pair-malformed")
def _(ws, stack):
    _edit_json(ws.layout.split_file(), lambda split: split["cross_inst_pairs"][0].pop("view"))
    return Run("featurenerf-eval", ws.eval_args(), str(ws.layout.split_file()), "malformed cross_inst_pairs entry")


@row("eval/part-map-truncated")
def _(ws, stack):
    npz = _truncate(ws.layout.part_2d(ws.pair["src"]))
    return Run("featurenerf-eval", ws.eval_args(), str(npz), "not a readable .npz file")


@row("eval/part-map-wrong-shape")
def _(ws, stack):
    npz = _save_npz(ws.layout.part_2d(ws.pair["src"]), labels=np.ones((SIZE, SIZE), np.uint8))
    return Run("featurenerf-eval", ws.eval_args(), str(npz), "'labels' must be (NV, H, W)")


@row("eval/part-map-wrong-dtype")
def _(ws, stack):
    npz = _save_npz(ws.layout.part_2d(ws.pair["src"]), labels=np.full((3, SIZE, SIZE), "seat"))
    return Run("featurenerf-eval", ws.eval_args(), str(npz), "'labels' must hold integer part labels, got <U4")


@row("eval/part-map-of-another-size")
def _(ws, stack):
    npz = _save_npz(ws.layout.part_2d(ws.pair["src"]), labels=np.ones((3, 16, 16), np.uint8))
    return Run("featurenerf-eval", ws.eval_args(), str(npz), "part maps are 16x16 but the renders are 32x32")


@row("eval/teacher-features-truncated")
def _(ws, stack):
    npy = _truncate(ws.cache / f"{ws.pair['src']}.npy")
    return Run("featurenerf-eval", ws.eval_args(), str(npy), "not a readable teacher feature file")


@row("eval/teacher-features-wrong-dtype")
def _(ws, stack):
    npy = ws.cache / f"{ws.pair['src']}.npy"
    np.save(npy, np.full((3, 48, 8, 8), "x"))
    return Run("featurenerf-eval", ws.eval_args(), str(npy), "features must be floats, got <U1")


@row("eval/teacher-features-wrong-shape")
def _(ws, stack):
    npy = ws.cache / f"{ws.pair['src']}.npy"
    np.save(npy, np.ones((3, 48, 8), np.float16))
    return Run("featurenerf-eval", ws.eval_args(), str(npy), "must be (NV, D, h, w)")


@row("eval/teacher-features-nan")
def _(ws, stack):
    npy = ws.cache / f"{ws.pair['src']}.npy"
    np.save(npy, np.full((3, 48, 8, 8), np.nan, np.float16))
    return Run("featurenerf-eval", ws.eval_args(), str(npy), "hold NaN or infinite features")


@row("eval/output-folder-is-a-file")
def _(ws, stack):
    _to_file(ws.root / "results")
    out = ws.root / "results"
    return Run("featurenerf-eval", ws.eval_args("--output-dir", str(out)), str(out / "chair"),
               f"cannot write: {out} is a file, not a folder")  # fmt: skip


@row("eval/disk-full")
def _(ws, stack):
    _full_disk(ws.out, stack, free=6000)
    return Run("featurenerf-eval", ws.eval_args(), str(ws.out / "chair"), "cannot write (No space left on device)",
               True)  # fmt: skip


@row("eval/model-config-missing")
def _(ws, stack):
    config = ws.root / "run" / "config.yml"
    return Run("featurenerf-eval", ws.eval_args("--load-config", str(config)), str(config),
               "not found: give the config.yml of an ns-train run")  # fmt: skip


@row("eval/model-config-is-a-folder")
def _(ws, stack):
    return Run("featurenerf-eval", ws.eval_args("--load-config", str(ws.root)), str(ws.root), "is a directory")


# ------------------------------------------------------------------ featurenerf-annotate
@row("annotate/mesh-truncated")
def _(ws, stack):
    mesh = ws.root / "meshes" / f"{ws.train}.obj"
    mesh.write_text(mesh.read_text().replace("\nf ", "\nf 1 ", 1).rsplit("\n", 3)[0] + "\nf 1 2")
    return Run("featurenerf-annotate", ws.annotate_args(), str(mesh), "face needs 3 vertices")


@row("annotate/mesh-face-beyond-the-vertices")
def _(ws, stack):
    mesh = ws.root / "meshes" / f"{ws.train}.obj"
    mesh.write_text(mesh.read_text() + "f 1 2 99999\n")
    return Run("featurenerf-annotate", ws.annotate_args(), str(mesh), "face refers to a vertex outside 1..")


@row("annotate/camera-with-nan")
def _(ws, stack):
    camera = _nan_camera(ws, ws.train)
    return Run("featurenerf-annotate", ws.annotate_args(), str(camera), "transform_matrix of frame 1 is not finite")


@row("annotate/part-points-malformed")
def _(ws, stack):
    pts = ws.root / "partseg" / SYN / "points" / f"{ws.train}.pts"
    pts.write_text("0.1 0.2 zero\n" + pts.read_text())
    return Run("featurenerf-annotate", ws.annotate_args(), str(pts), "malformed point file")


@row("annotate/part-labels-missing")
def _(ws, stack):
    seg = ws.root / "partseg" / SYN / "points_label" / f"{ws.train}.seg"
    seg.unlink()
    return Run("featurenerf-annotate", ws.annotate_args(), str(seg), "label file not found")


# ------------------------------------------------------------------ featurenerf-edit and featurenerf-import
@row("edit/model-config-missing")
def _(ws, stack):
    config = ws.root / "run" / "config.yml"
    return Run("featurenerf-edit", ["--load-config", str(config)], str(config),
               "not found: give the config.yml of an ns-train run")  # fmt: skip


def _import_args(ws: Workspace, checkpoint: Path, *extra: str) -> list[str]:
    return [str(checkpoint), "--data", str(ws.chair), "--output-dir", str(ws.out / "runs"), "--device-type", "cpu",
            *extra]  # fmt: skip


@row("import/checkpoint-truncated")
def _(ws, stack):
    checkpoint = ws.root / "pixel_nerf_latest"
    data = (ws.parity / "pixel_nerf_latest").read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    return Run("featurenerf-import", _import_args(ws, checkpoint), str(checkpoint), "not a readable PyTorch checkpoint")


@row("import/checkpoint-is-a-folder")
def _(ws, stack):
    return Run("featurenerf-import", _import_args(ws, ws.root), str(ws.root), "is a folder; give the checkpoint file")


@row("import/checkpoint-missing")
def _(ws, stack):
    checkpoint = ws.root / "pixel_nerf_latest"
    return Run("featurenerf-import", _import_args(ws, checkpoint), str(checkpoint), "checkpoint not found")


@row("import/config-malformed")
def _(ws, stack):
    conf = ws.root / "model.conf"
    conf.write_text("model {\n  encoder { backbone = resnet34\n")
    args = _import_args(ws, ws.parity / "pixel_nerf_latest", "--config", str(conf))
    return Run("featurenerf-import", args, str(conf), "line 3: missing '}'")


@row("import/config-flag-not-a-boolean")
def _(ws, stack):
    conf = ws.root / "model.conf"
    conf.write_text((ws.parity / "model.conf").read_text() + "\nmodel.regress_coord = maybe\n")
    args = _import_args(ws, ws.parity / "pixel_nerf_latest", "--config", str(conf))
    return Run("featurenerf-import", args, str(conf), "model.regress_coord = 'maybe' is not a bool")


@row("import/config-size-not-a-number")
def _(ws, stack):
    conf = ws.root / "model.conf"
    conf.write_text((ws.parity / "model.conf").read_text() + "\nmodel.mlp_coarse.d_hidden = wide\n")
    args = _import_args(ws, ws.parity / "pixel_nerf_latest", "--config", str(conf))
    return Run("featurenerf-import", args, str(conf), "a model setting is malformed")


@row("import/output-folder-is-a-file")
def _(ws, stack):
    blocking = _to_file(ws.out / "runs")
    args = _import_args(ws, ws.parity / "pixel_nerf_latest", "--config", str(ws.parity / "model.conf"))
    return Run("featurenerf-import", args, str(blocking / "chair"), f"cannot write: {blocking} is a file, not a folder",
               inside=True)  # fmt: skip


@row("import/disk-full")
def _(ws, stack):
    _full_disk(ws.out, stack, free=100_000)
    args = _import_args(ws, ws.parity / "pixel_nerf_latest", "--config", str(ws.parity / "model.conf"))
    return Run("featurenerf-import", args, str(ws.out / "runs" / "chair"), "cannot write (No space left on device)",
               inside=True)  # fmt: skip


# ------------------------------------------------------------------ ns-train and ns-eval
def _train_args(ws: Workspace, *extra: str) -> list[str]:
    return ["--data", str(ws.chair), "--output-dir", str(ws.out / "runs"), *extra]


@row("ns-train/camera-with-nan")
def _(ws, stack):
    camera = _nan_camera(ws, ws.train)
    return Run("ns-train", _train_args(ws), str(camera), "transform_matrix of frame 1 is not finite")


@row("ns-train/camera-is-a-folder")
def _(ws, stack):
    camera = _to_folder(ws.layout.camera_json(ws.train))
    return Run("ns-train", _train_args(ws), str(camera), "is a folder, expected a JSON file")


@row("ns-train/split-names-a-missing-object")
def _(ws, stack):
    _edit_json(ws.layout.split_file(), lambda split: split["train"].append("ghost"))
    return Run("ns-train", _train_args(ws), str(ws.layout.split_file()), "lists object 'ghost', which has neither")


@row("ns-train/png-unreadable")
def _(ws, stack):
    png = _garbage(_first_image(ws, ws.train))
    return Run("ns-train", _train_args(ws), str(png), "not a readable image")


@row("ns-train/teacher-cache-of-other-images")
def _(ws, stack):
    shutil.rmtree(ws.data / "synth_feat_32")  # the default teacher is then the DINO cache
    fingerprint = _edit_json(ws.cache / "teacher.json", lambda f: f["fingerprint"].__setitem__("image_size", [64, 64]))
    return Run("ns-train", _train_args(ws), str(fingerprint),
               "teacher cache made with other settings (image_size: [64, 64] != [32, 32])")  # fmt: skip


@row("ns-train/output-folder-is-a-file")
def _(ws, stack):
    blocking = _to_file(ws.out / "runs")
    return Run("ns-train", _train_args(ws), str(blocking / "chair" / "featurenerf-tiny"),
               f"cannot write: {blocking} is a file, not a folder", inside=True)  # fmt: skip


@row("ns-train/empty-masks")
def _(ws, stack):
    for obj in ws.split["train"]:
        for png in ws.layout.image_dir(obj).iterdir():
            rgba = np.asarray(Image.open(png)).copy()
            rgba[..., 3] = 0
            Image.fromarray(rgba).save(png)
    # read at the first training step, in a loader thread: a real ns-train ends in the excepthook
    cmd = [str(BIN / "ns-train"), "featurenerf-tiny", *_train_args(ws, "--max-num-iterations", "1")]
    return Run("ns-train", cmd, str(ws.layout.image_dir(ws.split["train"][0])), "empty mask: no foreground pixel",
               inside=True, process="plain")  # fmt: skip


@row("ns-eval/camera-with-nan")
def _(ws, stack):
    from featurenerf_ns.method_configs import featurenerf_tiny

    config = copy.deepcopy(featurenerf_tiny.config)
    config.pipeline.datamanager.data, config.output_dir, config.timestamp = ws.chair, ws.out / "runs", "run"
    config.save_config()  # a run that was started on good data, whose data broke since
    camera = _nan_camera(ws, ws.train)
    args = ["--load-config", str(config.get_base_dir() / "config.yml"), "--output-path", str(ws.out / "eval.json")]
    return Run("ns-eval", args, str(camera), "transform_matrix of frame 1 is not finite")


# ---------------------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_is_one_line_and_exit_status_2(name, pristine, parity, tmp_path, capsys):
    ws = Workspace(tmp_path / "ws", parity.folder)
    shutil.copytree(pristine, ws.root)
    with contextlib.ExitStack() as stack:
        run = ROWS[name](ws, stack)
        before = snapshot(ws.root)
        if run.process is None:
            with pytest.raises(SystemExit) as exit_info:
                _entrypoint(run.command)(run.args)
            status, err = exit_info.value.code, capsys.readouterr().err
        else:
            if run.process == "unprivileged":
                proc = run_unprivileged(run.args)
            else:  # nerfstudio's imports warn about torch deprecations: not part of the report
                env = {**os.environ, "PYTHONWARNINGS": "ignore"}
                proc = subprocess.run(run.args, capture_output=True, text=True, timeout=600, env=env)
            status, err = proc.returncode, proc.stderr
        after = snapshot(ws.root)
        left = temporaries(ws.root)
    assert status == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"error: {run.named}{'/' if run.inside else ': '}"), err
    assert run.problem in err, err
    assert {k: after.get(k) for k in before} == before, "an existing file changed"
    assert not left, f"temporary files left behind: {left}"
