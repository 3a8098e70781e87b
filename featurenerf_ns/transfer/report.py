"""What a benchmark run leaves behind: JSON, a PCK curve (paper Fig. 3), a qualitative grid (Figs. 4-5) and tables.

Files for one category and one benchmark ``<task>_<space>_<setting>`` under ``<output>/<category>/``:
``<slug>.json`` (per threshold, per pair and means of every method), ``<slug>_pck.png`` (keypoints:
PCK vs threshold, one line per method) or ``<slug>_miou.png`` (parts: one bar per method),
``<slug>_qualitative.png`` and ``<slug>.md`` (the comparison table, also printed with rich).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from featurenerf_ns.transfer.data import CategoryData, Pair  # noqa: E402
from featurenerf_ns.transfer.evaluate import MethodResult, PairResult, TaskSpec  # noqa: E402
from featurenerf_ns.utils.io import atomic_path, make_dirs, remove_temporaries, write_json  # noqa: E402


def headline_score(mean: dict) -> float:
    """One number for a method's ``mean`` entry in a result JSON: mIoU (parts) or PCK at the largest threshold."""
    if "miou" in mean:
        return mean["miou"]
    return mean["pck"][max(mean["pck"], key=float)]


def format_score(v: float | None, pct: bool = True) -> str:
    """A table cell: a score in percent with one decimal (``pct``) or a plain number; ``n/a`` for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.2f}"


def table_rows(results: Sequence[MethodResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (scores in percent)."""
    if not results:
        return [], []
    spec = results[0].spec
    fmt = format_score
    if spec.task == "parts":
        header = ["method", "mIoU", "pairs scored", "pairs/s"]
        rows = [
            [r.name, fmt(r.mean_miou), f"{len(r.scored)}/{len(r.pairs)}", fmt(r.pairs_per_s, False)] for r in results
        ]
    else:
        header = ["method"] + [f"PCK@{t:.3g}" for t in results[0].thresholds] + ["pairs scored", "pairs/s"]
        rows = [
            [r.name] + [fmt(v) for v in r.mean_pck] + [f"{len(r.scored)}/{len(r.pairs)}", fmt(r.pairs_per_s, False)]
            for r in results
        ]
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], title: str, console: Console | None = None
) -> None:
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", overflow="fold", no_wrap=i > 0)
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    (console or Console()).print(table)


def _save_fig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_pck_curve(results: Sequence[MethodResult], path: Path, title: str) -> None:
    """PCK (%) against the threshold, one line per method (the paper's Fig. 3)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for r in results:
        ax.plot(r.thresholds, [100 * v if not math.isnan(v) else np.nan for v in r.mean_pck], marker="o", label=r.name)
    unit = " (px)" if results and results[0].spec.space == "2d" else ""
    ax.set_xlabel(f"threshold{unit}")
    ax.set_ylabel("PCK (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_fig(fig, path)


def plot_miou_bars(results: Sequence[MethodResult], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    values = [100 * r.mean_miou if not math.isnan(r.mean_miou) else 0.0 for r in results]
    ax.bar(range(len(results)), values, color=[f"C{i}" for i in range(len(results))])
    ax.set_xticks(range(len(results)), [r.name for r in results], rotation=15, fontsize=8)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=9)
    _save_fig(fig, path)


# ---------------------------------------------------------------------- qualitative grid
def _on_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3].astype(np.float32) * a + 255.0 * (1 - a)).astype(np.uint8)


_PALETTE = np.array([plt.get_cmap("tab10")(i)[:3] for i in range(10)]) * 255.0
"""Part label ``l`` is drawn in colour ``l - 1`` of matplotlib's tab10."""


def _label_colors(labels: np.ndarray) -> np.ndarray:
    return _PALETTE[(np.asarray(labels) - 1) % len(_PALETTE)]


def _overlay_parts(img: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = img.astype(np.float32).copy()
    fg = labels != 0
    out[fg] = 0.2 * out[fg] + 0.8 * _label_colors(labels[fg])
    return out.astype(np.uint8)


def _kp_color(kp_id: int):
    return plt.get_cmap("tab20")(int(kp_id) % 20)


def _draw_kps(ax, xy: np.ndarray, ids: np.ndarray, keep: set[int], size: float) -> None:
    for (x, y), i in zip(xy, ids, strict=True):
        if int(i) in keep:
            ax.scatter([x], [y], s=size, color=_kp_color(int(i)), edgecolors="black", linewidths=0.5)


def plot_qualitative(
    data: CategoryData,
    spec: TaskSpec,
    results: Sequence[MethodResult],
    path: Path,
    num_pairs: int = 4,
) -> None:
    """Rows of pairs; columns: source with its annotation, target ground truth, each method's transfer."""
    n = min(num_pairs, len(results[0].pairs)) if results else 0
    if n == 0:
        return
    cols = 2 + len(results)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), squeeze=False)
    h, w = data.image_size
    size = 18.0 * max(h, w) / 128
    for row in range(n):
        pair: Pair = results[0].pairs[row].pair
        src_img = _on_white(data.image(pair.src, pair.src_view))
        trg_img = _on_white(data.image(pair.trg, pair.trg_view))
        panels: list[tuple[str, np.ndarray, PairResult | None, bool]] = [
            ("source", src_img, None, True),
            ("target (GT)", trg_img, None, False),
        ] + [(r.name, trg_img, r.pairs[row], False) for r in results]
        for col, (title, img, res, is_src) in enumerate(panels):
            ax = axes[row][col]
            ax.axis("off")
            if row == 0:
                ax.set_title(title, fontsize=8)
            obj, view = (pair.src, pair.src_view) if is_src else (pair.trg, pair.trg_view)
            if spec.task == "parts":
                _draw_parts(ax, data, spec, img, obj, view, res)
            else:
                _draw_keypoints(ax, data, spec, img, pair, obj, view, res, is_src, size)
    fig.suptitle(f"{data.category.name}: {spec.task} {spec.space} {spec.setting}", fontsize=9)
    _save_fig(fig, path)


def _draw_parts(ax, data, spec, img, obj, view, res) -> None:
    if spec.space == "2d":
        labels = res.pred_parts if res is not None and res.pred_parts is not None else data.part_2d(obj)[view]
        ax.imshow(_overlay_parts(img, labels))
        return
    ax.imshow((0.35 * img + 0.65 * 255).astype(np.uint8))  # faded, so the labelled points stand out
    pts, gt = data.part_3d(obj)
    labels = res.pred_parts if res is not None and res.pred_parts is not None else gt
    uv, z = data.project(obj, view, pts)
    order = np.argsort(-z)  # far points first so near ones stay visible
    ax.scatter(uv[order, 0], uv[order, 1], s=2.0, c=_label_colors(labels[order]) / 255.0, linewidths=0)


def _draw_keypoints(ax, data, spec, img, pair, obj, view, res, is_src, size) -> None:
    ax.imshow(img)
    if spec.space == "2d":
        src_kp, trg_kp = data.kp_2d(pair.src)[pair.src_view], data.kp_2d(pair.trg)[pair.trg_view]
    else:
        src_kp, trg_kp = data.kp_3d(pair.src)[0], data.kp_3d(pair.trg)[0]
    keep = set(src_kp[:, -1].astype(int).tolist()) & set(trg_kp[:, -1].astype(int).tolist())
    if res is not None and res.pred_kp is not None:
        kp = res.pred_kp
    else:
        kp = src_kp if is_src else trg_kp
    xy = kp[:, :2] if spec.space == "2d" else data.project(obj, view, kp[:, :3])[0]
    _draw_kps(ax, xy, kp[:, -1], keep, size)


# ---------------------------------------------------------------------- everything
def report_stem(folder: Path, slug: str, overwrite: bool = False) -> str:
    """``slug``, or with ``overwrite`` False and a finished result of that name in ``folder``, the first free
    ``slug-2``, ``slug-3``, ... (a result is finished when its JSON exists: it is written last)."""
    if overwrite or not (folder / f"{slug}.json").exists():
        return slug
    n = 2
    while (folder / f"{slug}-{n}.json").exists():
        n += 1
    return f"{slug}-{n}"


def write_report(
    folder: Path,
    data: CategoryData,
    spec: TaskSpec,
    results: Sequence[MethodResult],
    meta: dict | None = None,
    num_vis: int = 4,
    console: Console | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the figures, table and JSON of one benchmark into ``folder``; returns their paths by kind.

    An earlier result of the same benchmark in ``folder`` is kept (the new one is numbered, see :func:`report_stem`)
    unless ``overwrite``. The JSON is written last, so a killed run leaves no result that looks finished.
    """
    out = make_dirs(Path(folder))
    stem = report_stem(out, spec.slug, overwrite)
    unit = ", PCK thresholds in px" if spec.space == "2d" and spec.task == "keypoints" else ""
    title = f"{data.category.name} ({data.synset}): {spec.task} {spec.space} {spec.setting}{unit}"
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    curve = out / f"{stem}_{'pck' if spec.task == 'keypoints' else 'miou'}.png"
    qualitative = out / f"{stem}_qualitative.png"
    remove_temporaries([*paths.values(), curve, qualitative])  # of a run of this benchmark that was killed
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown_table(*table_rows(results), title))
    paths["curve"] = curve
    (plot_pck_curve if spec.task == "keypoints" else plot_miou_bars)(results, curve, title)
    if num_vis > 0 and results:
        paths["qualitative"] = qualitative
        plot_qualitative(data, spec, results, qualitative, num_vis)
    write_json(
        paths["json"],
        {
            "category": data.category.name,
            "synset": data.synset,
            "task": spec.task,
            "space": spec.space,
            "setting": spec.setting,
            "image_size": list(data.image_size),
            "thresholds": list(results[0].thresholds) if results else [],
            **(meta or {}),
            "methods": {r.name: r.to_json() for r in results},
        },
    )
    print_table(*table_rows(results), title, console)
    return paths
