import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A policy + PRM bundle trained by the tiny recipe (seconds), shared by the
    end-to-end tests of training, search and evaluation."""
    from openr.training.recipe import PRESETS, run_recipe

    out = tmp_path_factory.mktemp("arith-bundle")
    return out, run_recipe(PRESETS["tiny"], out, progress=False)
