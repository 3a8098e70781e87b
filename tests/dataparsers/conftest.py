"""Fixtures: tiny data sets in the authors' layout and in SRN's layout (see dataparser_fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dataparsers.dataparser_fixtures import make_authors_layout, make_srn_layout


@pytest.fixture
def authors_root(tmp_path: Path) -> Path:
    return make_authors_layout(tmp_path / "shapenet")


@pytest.fixture
def srn_root(tmp_path: Path) -> Path:
    return make_srn_layout(tmp_path / "srn")
