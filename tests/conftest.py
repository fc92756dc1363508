"""Shared fixtures (one local Ray instance for the whole session, the sample clip), the `gpu`
marker's hook (those tests are skipped where CUDA is not available), and Ray's workers kept at
normal priority."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    # Ray starts its workers at niceness 15: beside any busy process they get a few per cent of a
    # core, and a 10 s Ray test took 3 minutes next to two CPU-bound processes on 2 cores. Workers of
    # the clusters the tests start (here and in subprocesses) compete as equals; a caller's value wins.
    os.environ.setdefault("RAY_worker_niceness", "0")


def pytest_runtest_setup(item):
    """Skip a test marked `gpu` unless torch sees a CUDA device; torch is imported only here, for such a test."""
    if item.get_closest_marker("gpu") is None:
        return
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that needs one (starting one takes seconds).

    It declares a custom resource `accel` that stands in for GPUs in the resource tests.
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, resources={"accel": 2}, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: on a small shared CPU, idle intra-op threads spin and slow
    small models many times over. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory):
    """A 1.5 s cut of the built-in sample clip (the astronaut, zoomed into), with audio."""
    from pipeline.media.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample") / "sample.mp4", seconds=1.5)
