"""Commands killed with SIGKILL part-way (issue 16.3): a rerun trusts no partial file, redoes no finished work, and
ends with exactly the files of a run that was never interrupted.

Each test starts the real command as a process and kills it (the whole process group) at a chosen point: when a
given output file appears, after a delay, or while the command waits on a named pipe standing in for one of its
input files (a point it cannot run past). The rerun goes through the same entrypoint in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from featurenerf_ns.layout import CategoryLayout
from featurenerf_ns.synthetic.generate import generate_category, object_ids
from tests.dataparsers.co3d_fixtures import sphere_sequence, write_category
from tests.fs_helpers import snapshot
from tests.teachers.teacher_helpers import TINY_ARCH, tiny_vit

BIN = Path(sys.executable).parent
SYN = "03001627"


# ---------------------------------------------------------------------------------------------- killing
def _lower_priority() -> None:
    os.nice(10)


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 300.0) -> None:
    """Run ``cmd`` and SIGKILL its process group as soon as ``ready()`` holds; fails if it ended before.

    The command runs at a lower priority, so that on a busy machine the polling here still sees the kill point
    when it comes rather than after the command has run on.
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True,
                            preexec_fn=_lower_priority)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{Path(cmd[0]).name} ended (status {proc.returncode}) before the kill point: "
                            f"{proc.stderr.read().decode()[-2000:]}")  # fmt: skip
            assert time.monotonic() < deadline, "the kill point was never reached"
            time.sleep(0.002)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def written(root: Path, pattern: str) -> list[Path]:
    """Files under ``root`` matching the glob ``pattern``, without the temporaries of writes in progress."""
    return sorted(p for p in root.glob(pattern) if not p.name.startswith("."))


def files_appear(
    root: Path, pattern: str, count: int = 1, delay: float = 0.0, finished: bool = False
) -> Callable[[], bool]:
    """Ready ``delay`` seconds after ``count`` files under ``root`` match the glob ``pattern`` (the temporary file
    of a write in progress counts, so the kill may come in the middle of it, unless ``finished``)."""
    seen: list[float] = []
    matching = (lambda: written(root, pattern)) if finished else (lambda: list(root.glob(pattern)))

    def ready() -> bool:
        if not seen and len(matching()) >= count:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= delay

    return ready


class BlockingInput:
    """A named pipe in place of an input file: the command blocks reading it until the test puts the file back."""

    def __init__(self, path: Path):
        self.path, self.content, self.fd = path, path.read_bytes(), None
        path.unlink()
        os.mkfifo(path)

    def reader_waiting(self) -> bool:
        """Whether the command has reached the file (it then waits in ``read``: a writer is open, nothing written)."""
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
        return self.fd is not None

    def restore(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.path.unlink()
        self.path.write_bytes(self.content)


def plant_partial(path: Path) -> Path:
    """What a kill in the middle of writing ``path`` leaves: a partial temporary file, named as ``atomic_path``
    names it (a kill at a random time seldom lands inside a write of a few kilobytes)."""
    tmp = path.parent / f".{path.name}.killed.tmp{path.suffix}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"partial")
    return tmp


def identities(paths) -> dict[str, tuple[int, int]]:
    """``(inode, mtime_ns)`` of files: unchanged means not rewritten."""
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def rerun(entrypoint, args: list[str]) -> str:
    """Run a console script's entrypoint in this process; returns what it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        entrypoint(args)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- featurenerf-synth
SYNTH = dict(num_objects=24, num_views=3, image_size=32, num_pairs=4)
"""About 80 ms per object on a busy 2-core machine and 25 ms on an idle one: enough objects that a kill 0.2 s in
always lands before the end."""


def synth_args(root: Path) -> list[str]:
    return ["--root", str(root), *(f"--{k.replace('_', '-')}={v}" for k, v in SYNTH.items()), "--workers", "0",
            "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def synth_reference(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("synth_reference")
    generate_category(root, "chair", workers=0, progress=False, **SYNTH)
    return snapshot(root)


SYNTH_KILLS = {
    "after-the-first-object": lambda root: files_appear(root, f"camera/{SYN}/*.json"),
    "in-the-third-object": lambda root: files_appear(root, f"img/{SYN}/*/*.png", count=7),
    # the settings file is written first
    "0.05-s-in": lambda root: files_appear(root, "generator/*.json", delay=0.05),
    "0.2-s-in": lambda root: files_appear(root, "generator/*.json", delay=0.2),
}


@pytest.mark.parametrize("point", list(SYNTH_KILLS))
def test_featurenerf_synth_killed(point, synth_reference, tmp_path):
    from featurenerf_ns.synthetic.cli import entrypoint

    root = tmp_path / "synthetic"
    lay = CategoryLayout(root, SYN)
    kill_when([str(BIN / "featurenerf-synth"), *synth_args(root)], SYNTH_KILLS[point](root))
    assert not lay.split_file().exists()  # the category's completion marker
    done = [p.stem for p in written(root, f"camera/{SYN}/*.json")]  # an object's completion marker
    current = next(i for i in object_ids("chair", 0, SYNTH["num_objects"]) if i not in done)
    plant_partial(lay.image_dir(current) / "000.png")
    kept = identities(p for obj in done for p in lay.image_dir(obj).iterdir())
    printed = rerun(entrypoint, synth_args(root))
    assert f"({SYNTH['num_objects'] - len(done)} generated, {len(done)} already complete)" in printed
    assert identities(Path(p) for p in kept) == kept  # finished objects were not redone
    assert snapshot(root) == synth_reference  # nothing partial trusted, nothing left over


# ---------------------------------------------------------------------------------------------- featurenerf-teacher
@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    """A generated chair category (5 objects x 2 views x 32 px) and tiny DINO weights in weights/."""
    root = tmp_path_factory.mktemp("category")
    generate_category(root / "data", "chair", num_objects=5, num_views=2, image_size=32, num_pairs=4, workers=0,
                      progress=False)  # fmt: skip
    (root / "weights").mkdir()
    torch.save(tiny_vit().state_dict(), root / "weights" / "tiny_dino.pth")
    return root


def teacher_args(root: Path) -> list[str]:
    arch = [str(x) for kv in TINY_ARCH.items() for x in kv]
    weights = root / "weights" / "tiny_dino.pth"
    return ["dino", "--data", str(root / "data" / "chair"), "--teacher.weights", str(weights), "--teacher.arch", *arch,
            "--teacher.input-size", "32", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def teacher_reference(category, tmp_path_factory) -> dict[str, str]:
    from featurenerf_ns.teachers.cli import entrypoint

    root = tmp_path_factory.mktemp("teacher_reference")
    shutil.copytree(category, root, dirs_exist_ok=True)
    rerun(entrypoint, teacher_args(root))
    return snapshot(root / "data" / "dino_feat_256")


@pytest.mark.parametrize("point", ["waiting-for-the-third-object", "after-a-delay"])
def test_featurenerf_teacher_killed(point, category, teacher_reference, tmp_path):
    from featurenerf_ns.teachers.cache import object_ids
    from featurenerf_ns.teachers.cli import entrypoint

    shutil.copytree(category, tmp_path, dirs_exist_ok=True)
    lay = CategoryLayout(tmp_path / "data", SYN)
    ids = object_ids(lay.split_file(), "all")
    cache = tmp_path / "data" / "dino_feat_256" / SYN
    if point == "waiting-for-the-third-object":
        pipe = BlockingInput(lay.image_dir(ids[2]) / "000.png")
        ready = pipe.reader_waiting
    else:  # anywhere in the first objects; the pipe on the last one keeps the run from finishing first
        pipe = BlockingInput(lay.image_dir(ids[-1]) / "000.png")
        first = files_appear(cache, "*.npy", delay=0.05)

        def ready() -> bool:
            return first() or pipe.reader_waiting()

    kill_when([str(BIN / "featurenerf-teacher"), *teacher_args(tmp_path)], ready)
    pipe.restore()
    done = written(cache, "*.npy")
    assert len(done) < len(ids)
    plant_partial(cache / f"{next(i for i in ids if not (cache / f'{i}.npy').exists())}.npy")
    kept = identities(done)
    printed = rerun(entrypoint, teacher_args(tmp_path))
    assert f"{len(ids) - len(done)} objects extracted, {len(done)} already cached" in printed
    assert identities(done) == kept
    assert snapshot(tmp_path / "data" / "dino_feat_256") == teacher_reference


# ---------------------------------------------------------------------------------------------- the CO3D cache
CO3D_SEQUENCES = [f"{100 + i}_seq" for i in range(10)]
"""In the order they are processed: 8 train, 1 val, 1 test."""


def co3d_category(root: Path) -> Path:
    """Ten sphere sequences of four frames."""
    rng = np.random.default_rng(0)
    seqs = [sphere_sequence(name, rng) for name in CO3D_SEQUENCES]
    splits = {"train": CO3D_SEQUENCES[:8], "val": CO3D_SEQUENCES[8:9], "test": CO3D_SEQUENCES[9:]}
    return write_category(root, "hydrant", seqs, {"fewview_dev": splits})


CO3D_BUILD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from featurenerf_ns.dataparsers.co3d_cache import Co3dCacheSettings, ensure_co3d_cache\n"
    "ensure_co3d_cache(Path(sys.argv[1]), Co3dCacheSettings(**json.loads(sys.argv[2])), Path(sys.argv[3]), False)\n"
)


@pytest.fixture(scope="module")
def co3d(tmp_path_factory):
    """The category folder, the cache settings and the files of an uninterrupted build."""
    from featurenerf_ns.dataparsers.co3d import CO3DDataParserConfig
    from featurenerf_ns.dataparsers.co3d_cache import ensure_co3d_cache

    data = co3d_category(tmp_path_factory.mktemp("co3d"))
    settings = CO3DDataParserConfig(subset="fewview_dev").cache_settings()
    reference = tmp_path_factory.mktemp("co3d_reference")
    ensure_co3d_cache(data, settings, reference, progress=False)
    return data, settings, snapshot(reference)


CO3D_KILLS = {
    # the camera JSON is a sequence's completion marker: a kill while it is being written is the next case's
    "after-the-first-sequence": lambda cache: files_appear(cache, "*/camera/*/*.json", finished=True),
    "in-the-second-sequence": lambda cache: files_appear(cache, "*/img/*/*/*.png", count=6),
}


@pytest.mark.parametrize("point", list(CO3D_KILLS))
def test_co3d_cache_build_killed(point, co3d, tmp_path):
    from featurenerf_ns.dataparsers.co3d_cache import CACHE_INFO, ensure_co3d_cache

    data, settings, reference = co3d
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-c", CO3D_BUILD, str(data), json.dumps(dataclasses.asdict(settings)), str(cache)]
    kill_when(cmd, CO3D_KILLS[point](cache))
    assert not written(cache, f"*/{CACHE_INFO}")  # the cache's completion marker
    done = written(cache, "*/camera/*/*.json")  # a sequence's completion marker
    assert done, "killed before the first sequence was finished"
    cameras = done[0].parent
    plant_partial(cameras / f"{next(n for n in CO3D_SEQUENCES if not (cameras / f'{n}.json').exists())}.json")
    images = [p for cam in done for p in (cam.parents[2] / "img" / cam.parent.name / cam.stem).iterdir()]
    kept = identities(done + images)
    ensure_co3d_cache(data, settings, cache, progress=False)
    assert identities(Path(p) for p in kept) == kept
    assert snapshot(cache) == reference


# ---------------------------------------------------------------------------------------------- featurenerf-eval
def eval_args(root: Path, out: Path) -> list[str]:
    return ["parts", "--data", str(root / "data" / "chair"), "--output-dir", str(out), "--num-vis", "1"]


def comparable(folder: Path, root: Path) -> dict[str, object]:
    """A report's files without what depends on the run's speed (seconds, pairs/s) and where its data was."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".json":
            result = json.loads(p.read_text().replace(str(root), "<root>"))
            for method in result["methods"].values():
                method["mean"].pop("seconds"), method["mean"].pop("pairs_per_s")
            out[p.name] = result
        elif p.suffix == ".md":
            out[p.name] = [line.rsplit("|", 2)[0] for line in p.read_text().splitlines()]
        elif p.is_file():
            out[p.name] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def eval_reference(category, tmp_path_factory) -> dict[str, object]:
    from featurenerf_ns.transfer.cli import entrypoint

    out = tmp_path_factory.mktemp("eval_reference")
    rerun(entrypoint, eval_args(category, out))
    return comparable(out, category)


@pytest.mark.parametrize("point", ["drawing-the-figure", "when-the-table-appears"])
def test_featurenerf_eval_killed(point, category, eval_reference, tmp_path):
    from featurenerf_ns.transfer.cli import entrypoint

    out = tmp_path / "out"
    if point == "drawing-the-figure":
        # the qualitative figure is drawn after the table and the curve, before the JSON; the first test
        # object's first view is read earlier (the image size)
        split = json.loads(CategoryLayout(category / "data", SYN).split_file().read_text())
        pair = split["cross_inst_pairs"][0]
        obj = next(o for o in (pair["src"], pair["trg"]) if (o, pair["view"]) != (split["test"][0], 0))
        data = tmp_path / "data"
        shutil.copytree(category / "data", data)
        pipe = BlockingInput(CategoryLayout(data, SYN).image_dir(obj) / f"{pair['view']:03d}.png")
        kill_when([str(BIN / "featurenerf-eval"), *eval_args(tmp_path, out)], pipe.reader_waiting)
        pipe.restore()
        root = tmp_path
    else:
        kill_when([str(BIN / "featurenerf-eval"), *eval_args(category, out)], files_appear(out, "*/*.md"))
        root = category
    assert not written(out, "*/*.json")  # a result's completion marker: the run was stopped before it
    plant_partial(out / "chair" / "parts_2d_cross-instance.json")
    rerun(entrypoint, eval_args(root, out))
    assert comparable(out, root) == eval_reference


# ---------------------------------------------------------------------------------------------- featurenerf-import
def import_args(parity, data: Path, out: Path) -> list[str]:
    return [str(parity.checkpoint), "--config", str(parity.conf_path), "--data", str(data), "--output-dir", str(out),
            "--timestamp", "imp"]  # fmt: skip


def imported(config: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """An imported run: its config text and its checkpoint's tensors."""
    (ckpt,) = (config.parent / "nerfstudio_models").glob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return config.read_text(), {k: v for k, v in state["pipeline"].items() if isinstance(v, torch.Tensor)}


def test_featurenerf_import_killed(parity, tiny_root, tmp_path, monkeypatch):
    """Killed while it reads the authors' checkpoint (a pipe stands in for it), then a kill in the middle of writing
    (the temporary run folder it leaves, planted): the rerun writes the run exactly as an uninterrupted import does and
    leaves no temporary folder behind. Both imports run in folders of their own with the same relative --output-dir,
    so that their config.yml must be equal to the byte."""
    from featurenerf_ns.model.import_cli import entrypoint

    source = dataclasses.replace(parity, folder=tmp_path / "authors")
    shutil.copytree(parity.folder, source.folder)
    args = import_args(source, tiny_root / "chair", Path("out"))
    for name in ("reference", "killed"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "reference")
    rerun(entrypoint, args)
    want = imported(tmp_path / "reference" / "out" / "chair" / "featurenerf" / "imp" / "config.yml")

    monkeypatch.chdir(tmp_path / "killed")
    pipe = BlockingInput(source.checkpoint)
    kill_when([str(BIN / "featurenerf-import"), *args], pipe.reader_waiting)
    pipe.restore()
    runs = tmp_path / "killed" / "out" / "chair" / "featurenerf"
    assert not (runs / "imp").exists()
    partial = runs / ".imp.killed.tmp"
    (partial / "nerfstudio_models").mkdir(parents=True)
    (partial / "config.yml").write_text("partial")
    rerun(entrypoint, args)
    got = imported(runs / "imp" / "config.yml")
    assert got[0] == want[0]
    assert got[1].keys() == want[1].keys() and all(torch.equal(got[1][k], v) for k, v in want[1].items())
    assert sorted(p.name for p in runs.iterdir()) == ["imp"]
