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


@pytest.fixture(scope="session")
def golden(model_fixture_dir):
    """The original code's outputs on the golden tiny model (golden.npz), read once per run (a dict of
    arrays: an open NpzFile would unzip an array again at every lookup)."""
    import numpy as np

    with np.load(model_fixture_dir / "golden.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="session")
def meta(model_fixture_dir):
    """golden_meta.json: the prompts and settings the golden outputs were made with."""
    import json

    return json.loads((model_fixture_dir / "golden_meta.json").read_text())


@pytest.fixture(scope="session")
def tok(model_fixture_dir):
    """The golden model's text tokenizer, loaded once per run."""
    from unimoe_audio.model.engine import load_text_tokenizer

    return load_text_tokenizer(model_fixture_dir)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: small convolutions are ~30x slower with 2 OpenMP threads on a
    loaded 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random-weight bundle (model/tiny_bundle.py), built once per run; tests only read it."""
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    """Load the tiny bundle on CPU in fp32 with a chosen window: ``tiny_engine(window_frames=60)``. Each
    engine a module loads is closed when the module ends."""
    from unimoe_audio.model.engine import Engine

    engines = []

    def load(window_frames: int, context_frames: int = 20) -> Engine:
        e = Engine.load(tiny_model_dir, device="cpu", dtype="fp32", window_frames=window_frames,
                        context_frames=context_frames)
        engines.append(e)
        return e

    yield load
    for e in engines:
        e.close()
