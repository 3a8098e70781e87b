"""The six ShapeNet categories of the paper: names, synset ids and part vocabularies.

One table shared by the synthetic generator, the dataparsers and the transfer benchmarks, so that
a category can be named either way (``chair`` or ``03001627``) everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from featurenerf_ns.utils.io import UserError


@dataclass(frozen=True)
class Category:
    """A ShapeNet category as FeatureNeRF uses it."""

    name: str
    """Lower-case class name, also the diffusion teacher's prompt."""
    synset: str
    """ShapeNet synset id: the folder name in the authors' processed layout."""
    parts: tuple[str, ...]
    """ShapeNet-part style part names; part label ``i + 1`` is ``parts[i]`` (0 is background)."""


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("chair", "03001627", ("back", "seat", "leg", "arm")),
        Category("table", "04379243", ("top", "leg")),
        Category("airplane", "02691156", ("body", "wing", "tail", "engine")),
        Category("car", "02958343", ("roof", "hood", "wheel", "body")),
        Category("bottle", "02876657", ("body", "neck", "lid")),
        Category("motorcycle", "03790512", ("gas_tank", "seat", "wheel", "handle", "light", "body")),
    )
}
_BY_SYNSET = {c.synset: c for c in CATEGORIES.values()}


def resolve_category(name_or_synset: str) -> Category:
    """Look a category up by name (``chair``) or synset id (``03001627``).

    Raises:
        UserError: naming the known categories when the argument matches none.
    """
    key = name_or_synset.strip().lower()
    if key in CATEGORIES:
        return CATEGORIES[key]
    if key in _BY_SYNSET:
        return _BY_SYNSET[key]
    known = ", ".join(f"{c.name} ({c.synset})" for c in CATEGORIES.values())
    raise UserError(f"unknown category {name_or_synset!r}; known categories: {known}")
