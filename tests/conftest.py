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
