"""One set of limits: what submit accepts, the worker runs.

Random valid requests are drawn from the schema itself (each task's spec in client/tasks/, the shared
length and sampling specs in client/spec.py: every field within its declared bounds), put through the
daemon's submit checks (the task's probe on real files), then through the worker's mapping and the
engine's preparation (tiny model): none may fail there. And the bounds the engine enforces are refused
at submit, naming the field.
"""
from __future__ import annotations

import subprocess
import typing
from pathlib import Path

import annotated_types as at
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from unimoe_audio.client import protocol as P
from unimoe_audio.client import tasks
from unimoe_audio.client.request_fields import build_request
from unimoe_audio.client.errors import BadRequest
from unimoe_audio.model.errors import InvalidInput, MediaError

FILES: dict[str, str] = {}  # input-file fields -> a real file (filled by the module fixture)


def _bounds(field: typing.Any) -> dict[str, typing.Any]:
    out: dict[str, typing.Any] = {}
    for m in field.metadata:
        for name in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            v = getattr(m, name, None)
            if v is not None and isinstance(m, (at.Gt, at.Ge, at.Lt, at.Le, at.MinLen, at.MaxLen)):
                out[name] = v
    return out


def _scalar(annotation: typing.Any, b: dict[str, typing.Any], name: str) -> st.SearchStrategy:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = st.one_of([_scalar(a, b, name) for a in args])
        return st.none() | inner if type(None) in typing.get_args(annotation) else inner
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        lo = b.get("ge", b["gt"] + 1 if "gt" in b else 0)
        hi = b.get("le", b["lt"] - 1 if "lt" in b else lo + 10_000)
        return st.integers(min_value=lo, max_value=min(hi, lo + 10**6) if hi > 10**9 else hi)
    if annotation is float:
        lo = b.get("ge", b.get("gt", 0.0))
        hi = b.get("le", b.get("lt", 700.0))
        return st.floats(min_value=lo, max_value=hi, exclude_min="gt" in b, exclude_max="lt" in b,
                         allow_nan=False, allow_infinity=False)
    if annotation is str:
        if name in FILES:
            return st.just(FILES[name])
        if name == "fps":
            return st.sampled_from(["24000/1001", "25", "30000/1001", "48"])
        return st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=b.get("min_length", 0),
                       max_size=min(b.get("max_length", 60), 60))
    raise AssertionError(f"no strategy for {annotation!r} ({name})")


def from_model(model: type[BaseModel]) -> st.SearchStrategy[dict[str, typing.Any]]:
    """Field values drawn within the bounds the model declares (nested specs drawn the same way)."""
    parts: dict[str, st.SearchStrategy] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            parts[name] = from_model(ann)
        elif name == "voice":
            parts[name] = st.none()  # saved voices: the daemon's own store, tested in test_daemon_e2e
        else:
            s = _scalar(ann, _bounds(field), name)
            parts[name] = s if field.is_required() else (st.none() | s)
    return st.fixed_dictionaries(parts).map(lambda d: {k: v for k, v in d.items() if v is not None})


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    wav = d / "voice.wav"
    sf.write(wav, (0.1 * np.sin(np.linspace(0, 2000, 16000 * 3))).astype("float32"), 16000)
    video = d / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=4:size=96x64:rate=10",
                    "-pix_fmt", "yuv420p", str(video)], check=True, timeout=120)
    FILES.update(reference_audio=str(wav), video=str(video), continue_audio=str(wav))
    return d


@pytest.fixture(scope="module")
def eng(media):
    from unimoe_audio.model.engine import Engine
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    e = Engine.load(ensure_tiny_model(media / "tiny"), device="cpu")
    yield e
    e.close()


def _submit_checks(req: P.SubmitRequest) -> bool:
    """The daemon's submit-time checks of the task (its probe on the real files); False when refused."""
    from unimoe_audio.daemon import probe

    try:
        probe.probe_submit(req, Path(FILES["video"]).parent, [Path("/")], voices=None)
    except P.ProtocolError:
        return False
    return True


@pytest.mark.parametrize("name", ["speech", "music", "video_score"])
def test_random_valid_requests_never_fail_after_submit(name, media, eng):
    from unimoe_audio.daemon.worker import to_model_request

    spec_model = tasks.get(name).spec
    seen = {"prepared": 0}

    @settings(max_examples=20, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(spec=from_model(spec_model), stream=st.booleans())
    def check(spec, stream):
        spec["task"] = name
        try:
            req = P.SubmitRequest(spec=spec, stream_partial=stream)
        except ValidationError:
            assume(False)  # outside the schema (a cross-field rule): submit refuses it, as it should
        assume(_submit_checks(req))
        mreq = to_model_request(req, voices=None)
        try:
            eng.prepare(mreq)
        except (InvalidInput, MediaError) as exc:
            raise AssertionError(f"submit accepted {req.spec!r} but the engine refused it: {exc}") from None
        seen["prepared"] += 1

    check()
    assert seen["prepared"] >= 5, "too few requests got past the schema to mean anything"


@pytest.mark.parametrize("kind, fields, field", [
    ("music", dict(top_k=0), "spec.sampling.top_k"),
    ("music", dict(top_k=1028), "spec.sampling.top_k"),
    ("music", dict(eos_factor=101), "spec.sampling.eos_factor"),
    ("music", dict(tempo_bpm=10), "spec.tempo_bpm"),
    ("music", dict(bars=1001), "spec.bars"),
    ("music", dict(caption="x" * 4001), "spec.caption"),
    ("music", dict(caption="   "), "spec"),
    ("music", dict(bars=400, tempo_bpm=20), "spec"),
    ("music", dict(min_seconds=5, max_seconds=2), "spec.length"),
    ("music", dict(frames=10, fps="2000"), "spec.length.fps"),
    ("speech", dict(text="   ", voice="v"), "spec.text"),
    ("speech", dict(text="Hi."), "spec"),
    ("speech", dict(text="Hi.", reference_audio="/x.wav", reference_text="y" * 2001), "spec.reference_text"),
    ("score", dict(video="/x.mp4", in_seconds=0, out_seconds=700), "spec"),
])
def test_engine_bounds_are_refused_at_submit_naming_the_field(kind, fields, field):
    base = {"music": {"caption": "calm"}, "speech": {}, "score": {}}[kind]
    with pytest.raises(BadRequest) as e:
        build_request(kind, **{**base, **fields})
    assert e.value.field == field, (e.value.field, str(e.value))
    assert e.value.code == "invalid_input"
