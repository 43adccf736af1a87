"""Shared pytest fixtures: only generic paths (each test file owns its specific fixtures)."""
from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def model_fixture_dir() -> Path:
    """The golden tiny model: config.json, model.safetensors, golden.npz, golden_meta.json, tokenizer/."""
    return FIXTURES / "model"


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: small convolutions are ~30x slower with 2 OpenMP threads on a
    loaded 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
