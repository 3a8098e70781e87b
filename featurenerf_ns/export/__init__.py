"""``featurenerf-export``: what a trained FeatureNeRF gives as files, a 3D semantic field of one source.

- :mod:`~featurenerf_ns.export.source`: what is encoded (a dataset object's views or a photo);
- :mod:`~featurenerf_ns.export.reference`: part labels of an annotated object, as v_NeRF vectors to match;
- :mod:`~featurenerf_ns.export.surface`: density grid -> marching cubes -> mesh / surface points, and the field's
  colour, v_NeRF, PCA colour and labels on them;
- :mod:`~featurenerf_ns.export.orbit`: rendered views around the object -> frames -> PNG + MP4/GIF;
- :mod:`~featurenerf_ns.export.files`: atomic PLY/GLB/NPZ/PNG/video writers;
- :mod:`~featurenerf_ns.export.cli`: the ``pointcloud``, ``mesh`` and ``orbit`` subcommands.
"""
