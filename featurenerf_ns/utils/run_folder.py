"""Writing a whole nerfstudio run folder (``config.yml`` + ``nerfstudio_models/step-*.ckpt``) that was not trained
here: an imported checkpoint, or a benchmark's modified copy of a run.

The folder is written under a temporary name next to its place and renamed into place only when complete, so a
killed write never leaves a run that ``ns-eval`` or a rerun would trust; the temporaries of earlier killed writes of
the same run are removed first.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from featurenerf_ns.utils.io import make_dirs, naming_write_errors

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig


def write_run(
    config: TrainerConfig, checkpoint: dict[str, Any], extra_files: Mapping[str, bytes] | None = None
) -> Path:
    """Write ``config``'s run folder (``config.get_base_dir()``, which must not exist) with ``checkpoint`` saved as
    its step ``checkpoint["step"]``, plus ``extra_files`` (name -> content) next to ``config.yml``; returns the
    ``config.yml``. A write the file system refuses is a :class:`~featurenerf_ns.utils.io.DataError` naming the run.
    """
    base_dir = config.get_base_dir()
    make_dirs(base_dir.parent)
    with naming_write_errors(base_dir):
        for stale in base_dir.parent.glob(f".{base_dir.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{base_dir.name}.", suffix=".tmp", dir=base_dir.parent))
        try:
            (tmp / "config.yml").write_text(yaml.dump(config), "utf8")
            for name, content in (extra_files or {}).items():
                (tmp / name).write_bytes(content)
            models = tmp / config.relative_model_dir
            models.mkdir(parents=True)
            # Written by Python, a full disk is an OSError that names the run (torch's writer raises RuntimeError).
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            (models / f"step-{checkpoint['step']:09d}.ckpt").write_bytes(buffer.getbuffer())
            os.rename(tmp, base_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return base_dir / "config.yml"
