"""Progress bars of the export's long loops (nerfstudio's rich bar: description, bar, count, speed, time left)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import torch
from nerfstudio.utils.rich_utils import get_progress
from torch import Tensor

T = TypeVar("T")


def track(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate over ``items`` under a progress bar."""
    with get_progress(description) as progress:
        task = progress.add_task(description, total=len(items))
        for item in items:
            yield item
            progress.advance(task)


def map_chunks(fn: Callable[[slice], dict[str, Tensor]], total: int, chunk: int, description: str) -> dict[str, Tensor]:
    """Apply ``fn`` to consecutive slices of ``range(total)`` (``chunk`` long) and concatenate its outputs."""
    pieces: dict[str, list[Tensor]] = {}
    starts: Iterable[int] = range(0, total, max(1, chunk))
    for start in track(list(starts), description):
        for key, value in fn(slice(start, min(start + chunk, total))).items():
            pieces.setdefault(key, []).append(value.detach().cpu())
    return {key: torch.cat(values) for key, values in pieces.items()}
