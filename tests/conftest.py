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


@pytest.fixture
def one_thread():
    """torch on one thread for the test: small forward passes run no faster on two,
    and the other core stays free for the rest of the suite."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
