"""Procedural object categories with parts, keypoints and a synthetic teacher, written in the authors' layout.

ShapeNet cannot be downloaded here, so :mod:`.generate` renders procedural stand-ins for the six
categories of :mod:`featurenerf_ns.categories` into exactly the folder layout of the authors'
processed data (:mod:`featurenerf_ns.layout`); everything downstream reads them through the same
code path as real data.

- :mod:`.shapes`: parametric mesh families (parts, keypoints, textures).
- :mod:`.render`: CPU ray casting with embree (RGBA, part maps, hit points).
- :mod:`.teacher`: a DINO-shaped synthetic teacher feature map.
- :mod:`.generate`: the writer (atomic, resumable, deterministic) and the embedded default category.
- :mod:`.cli`: ``featurenerf-synth``.
"""
