"""Shared test setup."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    # every test draws the same random numbers whatever ran before it
    torch.manual_seed(0)
