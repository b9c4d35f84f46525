"""Shared test setup."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    # every test draws the same random numbers whatever ran before it
    torch.manual_seed(0)


@pytest.fixture
def single_thread():
    """Run torch on one thread: on the 2 shared cores of the test machines, two OpenMP threads
    wait on each other whenever either is descheduled, which made small ops ~20× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
