"""The entry-point module loads on its own and stays clear of the circular-import trap."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from featurenerf_ns.dataparsers.featurenerf_dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.dataparsers.srn_dataparser import SRNDataParserConfig


def test_entry_points_are_specifications():
    eps = entry_points(group="nerfstudio.dataparser_configs")
    specs = {name: eps[name].load() for name in ("featurenerf-data", "featurenerf-srn")}
    assert all(isinstance(s, DataParserSpecification) for s in specs.values())
    assert isinstance(specs["featurenerf-data"].config, FeatureNeRFDataParserConfig)
    assert isinstance(specs["featurenerf-srn"].config, SRNDataParserConfig)


def test_specs_module_imports_no_datamanager_pipeline_model_or_method():
    code = (
        "import sys, json; import featurenerf_ns.dataparsers.specs; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('featurenerf_ns', 'nerfstudio')))))"
    )
    mods = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    forbidden = ("datamanager", "pipeline", "models", "model", "method_configs")
    ours = [m for m in mods if m.startswith("featurenerf_ns")]
    assert not [m for m in ours if any(part in forbidden for part in m.split(".")[1:])], ours
    assert not [m for m in mods if m.startswith(("nerfstudio.data.datamanagers", "nerfstudio.pipelines"))]
