"""Shared pytest fixtures: the golden files, the tiny engine and a real daemon for a module, a client of it.
A test module that needs something else (other daemon settings, another window) defines its own."""
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


def _home(request, tmp_path_factory) -> Path:
    """A fresh UNIMOE_AUDIO_HOME named after the test module (``test_gui_panel`` -> ``gui_panel-home0``)."""
    return tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2].removeprefix("test_") + "-home")


@pytest.fixture(scope="module")
def daemon_settings() -> dict:
    """The settings of the module's ``daemon`` beyond the test defaults (none); a module overrides this
    fixture to tune its daemon, e.g. ``{"keep_alive": 0, "max_batch": 4}``."""
    return {}


@pytest.fixture(scope="module")
def daemon(request, tmp_path_factory, daemon_settings):
    """A started daemon on the tiny model (tests/_daemon_harness.py) with ``daemon_settings``, one per
    test module."""
    from _daemon_harness import DaemonProc

    d = DaemonProc(_home(request, tmp_path_factory), **daemon_settings).start()
    yield d
    d.close()


@pytest.fixture(scope="module")
def voice_daemon(request, tmp_path_factory):
    """Like ``daemon``, with a saved voice 'narrator' (for the host scripts' speech runs)."""
    from _daemon_harness import start_with_voice

    d = start_with_voice(_home(request, tmp_path_factory))
    yield d
    d.close()


@pytest.fixture(scope="module")
def cli_daemon(request, tmp_path_factory):
    """A daemon started the way a user starts one, ``unimoe-audio serve --detach`` (tests/_client_harness.py)."""
    from _client_harness import Daemon

    d = Daemon(_home(request, tmp_path_factory))
    yield d
    d.stop()


@pytest.fixture
def use_daemon_env(monkeypatch):
    """Point this process at a daemon for one test, as a user's shell does: ``use_daemon_env(d.env)`` sets
    its UNIMOE_AUDIO_* variables; ``alone=True`` first unsets every other UNIMOE_AUDIO_* variable (a shell
    with no settings of its own). All are restored after the test."""
    import os

    def use(env: dict[str, str], alone: bool = False) -> None:
        if alone:
            for k in [k for k in os.environ if k.startswith("UNIMOE_AUDIO_")]:
                monkeypatch.delenv(k)
        for k, v in env.items():
            if k.startswith("UNIMOE_AUDIO_"):
                monkeypatch.setenv(k, v)

    return use


@pytest.fixture
def env_client(use_daemon_env):
    """``env_client(d, timeout=10)``: a client of daemon ``d`` that finds it through the environment's
    settings, as a user's script does (no auto-start); closed after the test."""
    from unimoe_audio.client.client import Client
    from unimoe_audio.client.settings import load_settings

    clients = []

    def connect(daemon, timeout: float) -> Client:
        use_daemon_env(daemon.env)
        clients.append(Client(load_settings(), auto_start=False, timeout=timeout))
        return clients[-1]

    yield connect
    for c in clients:
        c.close()
