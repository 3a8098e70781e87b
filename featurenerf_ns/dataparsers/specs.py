"""Entry points ``nerfstudio.dataparser_configs``: ``featurenerf-data``, ``featurenerf-srn``, ``featurenerf-co3d``.

nerfstudio imports this module while its datamanager module is still half imported, so it (and
what it imports) must not import datamanagers, pipelines, models or method configs.
"""

from __future__ import annotations

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from featurenerf_ns.dataparsers.co3d import CO3DDataParserConfig
from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.dataparsers.srn_dataparser import SRNDataParserConfig
from featurenerf_ns.utils.errors import install_data_error_hook

# ns-train/ns-eval/ns-viewer import this module during plugin discovery: the earliest point at which
# the project can make bad-data errors print as one line.
install_data_error_hook()

featurenerf_data = DataParserSpecification(
    config=FeatureNeRFDataParserConfig(),
    description="FeatureNeRF's processed ShapeNet layout (img/, camera/, annotations, teacher features); "
    "--data <root>/<category>, default: the embedded synthetic chairs",
)

featurenerf_srn = DataParserSpecification(
    config=SRNDataParserConfig(),
    description="pixelNeRF's SRN ShapeNet renders (srn_cars, srn_chairs); --data <root>/cars",
)

featurenerf_co3d = DataParserSpecification(
    config=CO3DDataParserConfig(),
    description="CO3D v2 category (one object per sequence), cropped, normalised and cached once in FeatureNeRF's "
    "layout; --data <co3d_root>/<category>",
)
