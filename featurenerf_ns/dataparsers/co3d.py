"""Dataparser for CO3D v2 categories (``featurenerf-co3d``): one object per sequence.

```
ns-train featurenerf-cpu --data <co3d_root>/hydrant featurenerf-co3d
ns-train featurenerf featurenerf-co3d --data <co3d_root>/hydrant --subset fewview_dev --resolution 128
```
The first use preprocesses the category once (:mod:`featurenerf_ns.dataparsers.co3d_cache`: crop
around the mask, resize, composite on black, normalise each sequence to the ShapeNet renders'
scale) into a cache in the authors' processed layout; the authors'-layout parser
(:class:`~featurenerf_ns.dataparsers.featurenerf_dataparser.FeatureNeRFDataParser`) then reads that
cache, with the CO3D category name as its "synset" folder (through its ``_category`` hook).
Teacher features for the cache are made with ``featurenerf-teacher`` on the cache root, like for
ShapeNet, and picked up by ``--teacher auto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.categories import Category
from featurenerf_ns.dataparsers.base import CategoryDataParser, CategoryDataParserConfig
from featurenerf_ns.dataparsers.co3d_cache import Co3dCache, Co3dCacheSettings, ensure_co3d_cache
from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParser, FeatureNeRFDataParserConfig
from featurenerf_ns.geometry import CAMERA_DISTANCE


@dataclass
class CO3DDataParserConfig(CategoryDataParserConfig):
    """CO3D v2 category (sequences as objects), preprocessed once into the authors' layout."""

    _target: type = field(default_factory=lambda: CO3DDataParser)
    data: Path = Path("co3d/hydrant")
    """<co3d_root>/<category>: the folder holding frame_annotations.jgz, sequence_annotations.jgz,
    set_lists/ and the sequence folders (image paths in the annotations are relative to <co3d_root>)."""
    subset: str = "fewview_dev"
    """Set list set_lists/set_lists_<subset>.json; a sequence belongs to the most held-out split it is
    listed in (test, then val, then train)."""
    min_viewpoint_quality: float | None = 0.5
    """Keep sequences whose viewpoint_quality_score is above this (None keeps all, including unscored)."""
    frames_per_sequence: int | None = 50
    """Frames kept per sequence, evenly spaced (None: all)."""
    resolution: int = 128
    """Side (px) of the cached square crops (the paper's 128); --image-size can rescale at load time."""
    crop_margin: float = 0.1
    """Margin around the mask's box on each side, as a fraction of the box's longer side."""
    mask_threshold: float = 0.5
    """A pixel is foreground when its mask value (0..1) is at least this."""
    min_mask_fraction: float = 0.001
    """Frames whose foreground covers less of the image are unusable (dropped)."""
    camera_distance: float = CAMERA_DISTANCE
    """Mean camera distance of each normalised sequence (the ShapeNet renders' 1.3)."""
    skip_bad_sequences: bool = False
    """Drop (with a warning) sequences with no usable frame instead of stopping with an error."""
    cache_dir: Path | None = None
    """Folder of the preprocessed caches (one per settings fingerprint). Default:
    $FEATURENERF_CACHE/co3d/<category> when set, else <data>/featurenerf_cache."""
    teacher: str = "auto"
    """Teacher feature folder under the cache root (see featurenerf-data's --teacher); 'none' = no teacher."""
    near: float | None = None
    """Near distance along (unit) rays; None: computed from the normalisation (brackets every object)."""
    far: float | None = None
    """Far distance along (unit) rays; None: computed from the normalisation."""
    progress: bool = True
    """Show a progress bar while preprocessing."""

    def cache_settings(self) -> Co3dCacheSettings:
        # The cache's settings are the subset of this config's fields that change the cached files.
        return Co3dCacheSettings(**{f.name: getattr(self, f.name) for f in fields(Co3dCacheSettings)})


class _CacheLayoutParser(FeatureNeRFDataParser):
    """The authors'-layout parser on a CO3D cache: the category is the CO3D name, used as the synset folder."""

    def _category(self, name: str) -> Category:
        return Category(name=name, synset=name, parts=())


class CO3DDataParser(CategoryDataParser):
    """Preprocesses the category (once) and hands the cache to the authors'-layout parser."""

    config: CO3DDataParserConfig

    def __init__(self, config: CO3DDataParserConfig):
        super().__init__(config)
        self._cache: Co3dCache | None = None
        self._inner: _CacheLayoutParser | None = None

    @property
    def cache(self) -> Co3dCache:
        if self._cache is None:
            self._cache = ensure_co3d_cache(
                Path(self.config.data), self.config.cache_settings(), self.config.cache_dir, self.config.progress
            )
            CONSOLE.print(
                f"CO3D '{self._cache.category}' from {self._cache.root}: {self._cache.info['sequences']} sequences, "
                f"near/far {self._cache.near:.3f}/{self._cache.far:.3f}"
            )
        return self._cache

    def _layout_parser(self) -> _CacheLayoutParser:
        if self._inner is None:
            cache = self.cache
            cfg = self.config
            inner = FeatureNeRFDataParserConfig(
                data=cache.root / cache.category,
                teacher=cfg.teacher,
                near=cache.near if cfg.near is None else cfg.near,
                far=cache.far if cfg.far is None else cfg.far,
                image_size=cfg.image_size,
                pixel_convention=cfg.pixel_convention,
                max_objects=cfg.max_objects,
            )
            self._inner = _CacheLayoutParser(inner)
        return self._inner

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        outputs = self._layout_parser()._generate_dataparser_outputs(split)
        outputs.metadata["dataset"] = "co3d"
        outputs.metadata["co3d_data"] = str(self.config.data)
        return outputs
