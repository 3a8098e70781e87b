import pytest

from featurenerf_ns.synthetic.generate import generate_category

TINY = dict(num_objects=10, num_views=4, image_size=48, seed=0, teacher_dim=16, num_pairs=30, workers=0, progress=False)


@pytest.fixture(scope="session")
def tiny():
    """Settings of the tiny category (generate_category keyword arguments)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A tiny generated chair category (10 objects x 4 views x 48 px), shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("synth_tiny")
    generate_category(root, "chair", **TINY)
    return root
