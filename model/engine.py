"""The engine: load the model once, run many requests (speech, music, video score).

    eng = Engine.load("~/models/unimoe-audio")          # dac=None: model_dir/dac/
    res = eng.music(MusicRequest("calm piano", length=Length(seconds=8)))
    res.audio  # float32 [1, n] at 16 kHz

The engine is not thread-safe: one caller (the daemon's worker thread) drives it. ``run_batch``
generates compatible requests together (one forward per step for all of them). For requests that
arrive at different moments, ``job_batch()`` is a continuous batch (model/scheduler.py): prepared
jobs join between decode steps and leave when done.

Decode steps: ``decode="static"`` runs the bucketed static-shape step (CUDA graphs on CUDA, captured
at load by ``warmup``), ``"eager"`` the ordinary forward; ``"auto"``: static on CUDA, eager elsewhere
(measured faster on the CPU, see bench/bench_speed.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import tasks as T
from .errors import CheckpointError, InvalidInput, MediaError, UniMoEError
from .generation import DecodeSession, DecoderBackend, default_static
from .scheduler import JobBatch
from .requests import AudioResult, MusicRequest, ProgressCallback, SpeechRequest, VideoScoreRequest

log = logging.getLogger("unimoe_audio.model.engine")

DEFAULT_WINDOW_FRAMES = 981  # reference max_tokens 1000 minus the 19-row delay tail (19.62 s)
DEFAULT_CONTEXT_FRAMES = 250  # 5 s of previous audio prefilled into each continuation window
DECODE_MODES = ("auto", "static", "eager")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; elsewhere what torch reports, lower-cased)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        cap = torch.backends.cpu.get_cpu_capability().lower()  # e.g. "avx512", "avx2"
        return frozenset({cap})
    except Exception:  # noqa: BLE001
        return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | set[str]) -> bool:
    """bf16 matmuls run natively (avx512_bf16 or AMX): on such CPUs bf16 decode measured faster than
    fp32 (86.5 vs 51.1 steps/s, small config); without them bf16 is emulated (it can still win where memory bandwidth rules: README)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def auto_device_dtype(*, cuda: bool, mps: bool, flags: frozenset[str] | set[str]) -> tuple[str, torch.dtype]:
    """The ``auto`` rule as a pure function: CUDA bf16, then Apple mps bf16 (untested here), then CPU
    bf16 where the CPU has native bf16 (avx512_bf16/AMX), else CPU fp32."""
    if cuda:
        return "cuda", torch.bfloat16
    if mps:
        return "mps", torch.bfloat16
    return "cpu", torch.bfloat16 if cpu_has_fast_bf16(flags) else torch.float32


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # noqa: BLE001 - a broken Metal install must not stop the CPU path
        return False


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        dev, _ = auto_device_dtype(cuda=torch.cuda.is_available(), mps=_mps_available(), flags=frozenset())
        return torch.device(dev)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {device!r}", field="device", wanted="auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("CUDA is not available", field="device", wanted="auto or cpu")
    if dev.type == "mps" and not _mps_available():
        raise InvalidInput("MPS is not available", field="device", wanted="auto or cpu")
    return dev


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device,
               flags: frozenset[str] | set[str] | None = None) -> torch.dtype:
    """``auto``: bf16 on cuda and mps, on the CPU bf16 only with native bf16 (see auto_device_dtype)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = "auto" if dtype is None else str(dtype).lower().replace("torch.", "")
    if name == "auto":
        if device.type in ("cuda", "mps"):
            return torch.bfloat16
        return auto_device_dtype(cuda=False, mps=False, flags=cpu_flags() if flags is None else flags)[1]
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if name not in table:
        raise InvalidInput(f"unknown dtype {dtype!r}", field="dtype", wanted="auto, bf16, fp16 or fp32")
    return table[name]


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over config.json and the weight index (or each safetensors header when unsharded)."""
    h = hashlib.sha256()
    cfg = model_dir / "config.json"
    h.update(cfg.read_bytes() if cfg.is_file() else b"")
    idx = model_dir / "model.safetensors.index.json"
    if idx.is_file():
        h.update(idx.read_bytes())
    else:
        for f in sorted(model_dir.glob("*.safetensors")):
            with open(f, "rb") as fh:
                head = fh.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else 0
                h.update(f.name.encode())
                h.update(fh.read(min(n, 1 << 26)))
    return h.hexdigest()


class Engine:
    """UniMoE-Audio: a loaded language model + DAC codec + tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, codec: Any, *, model_dir: Path, device: torch.device,
                 dtype: torch.dtype, load_vision: bool, window_frames: int = DEFAULT_WINDOW_FRAMES,
                 context_frames: int = DEFAULT_CONTEXT_FRAMES, decode: str = "auto", invariant: bool = True):

        self.model = model
        self.tok = tokenizer
        self.codec = codec
        self.model_dir = Path(model_dir)
        self.device = device
        self.dtype = dtype
        self.lm = DecoderBackend(model)
        cfg = self.lm.config
        self.placeholder_id = int(cfg.codec_placeholder_value)
        self.video_token_id = int(cfg.video_token_id)
        self.delays = list(cfg.codec_delay_pattern)
        self.has_vision = bool(load_vision and self.lm.has_vision)
        self.window_frames = int(window_frames)
        self.context_frames = int(context_frames)
        self.speech_max_chars = T.SPEECH_MAX_CHARS  # speech text is generated in chunks of at most this
        if decode not in DECODE_MODES:
            raise InvalidInput(f"unknown decode mode {decode!r}", field="decode", wanted=" or ".join(DECODE_MODES))
        self.static = default_static(self.lm) if decode == "auto" else decode == "static"
        self.max_rows: int | None = None  # decode rows in flight at most (plan(): from the memory plan)
        self.invariant = bool(invariant)  # batch-invariant decode steps (model/invariant.py)
        self.decode_plan: Any = None
        self._lock = threading.RLock()
        self._closed = False
        n_params = sum(int(p.numel()) for p in model.parameters()) if hasattr(model, "parameters") else 0
        self.info: dict[str, Any] = {
            "model_id": self.lm.model_id or self.model_dir.name,
            "model_dir": str(self.model_dir),
            "sha256": model_fingerprint(self.model_dir),
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
            "quant": getattr(model, "quant", "none"),
            "parameters": n_params,
            "vision": self.has_vision,
            "tiny": bool(self.lm.is_tiny),
            "sample_rate": T.SAMPLE_RATE,
            "window_frames": self.window_frames,
            "decode": "static" if self.static else "eager",
            "batch_invariant": self.invariant,
        }

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: str | Path, *, dac: str | Path | None = None, device: str = "auto",
             dtype: str = "auto", load_vision: bool = True, window_frames: int = DEFAULT_WINDOW_FRAMES,
             context_frames: int = DEFAULT_CONTEXT_FRAMES, quant: str = "none",
             memory_budget_gb: float | None = None, decode: str = "auto", warmup: bool = True,
             invariant: bool = True) -> "Engine":
        """Load a checkpoint folder (config.json, safetensors, tokenizer files) and the DAC.

        ``dac`` None looks in ``model_dir/dac/``. device "auto": cuda, then mps, then cpu. dtype
        "auto": bf16 on cuda/mps and on CPUs with native bf16, else fp32 (:func:`auto_device_dtype`).
        ``quant`` "int8"/"int4": weight-only quantized linears (a folder stored quantized loads as it
        is). Before loading, the memory the model needs is estimated from config and safetensors
        headers and compared with what the device has (``memory_budget_gb`` overrides that figure):
        a model that cannot fit is refused with :class:`memory.MemoryTooSmall`, naming what would.
        ``invariant`` (default True): decode steps are batch-invariant (model/invariant.py), so a seeded
        take does not depend on the jobs sharing its batch; False trades that for batched throughput.
        """

        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "config.json").is_file():
            raise CheckpointError(f"no config.json in {model_dir}", field="model_dir")
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        if window_frames < 2 or context_frames < 1 or context_frames >= window_frames:
            raise InvalidInput("need 1 <= context_frames < window_frames", field="window_frames")
        dac_path = Path(dac).expanduser() if dac else model_dir / "dac"
        from . import memory
        from .quant import check_method, quant_of

        try:
            quant = check_method(quant)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="quant", wanted="none, int8 or int4") from exc
        if decode not in DECODE_MODES:
            raise InvalidInput(f"unknown decode mode {decode!r}", field="decode", wanted=" or ".join(DECODE_MODES))
        static = decode == "static" or (decode == "auto" and dev.type == "cuda")
        avail, source = memory.available_bytes(dev, memory_budget_gb)
        try:
            est = memory.estimate(model_dir, dtype=dt, quant=quant, device=str(dev), load_vision=load_vision,
                                  avail=avail, static=static)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot read the weights' headers in {model_dir}: {exc}", field="model_dir") from exc
        memory.check_fits(model_dir, est, avail, source, load_vision=load_vision)
        log.info("loading %s: estimated %s (%s; up to %d decode rows), %s available (%s)", model_dir,
                 memory.gb(est.total_bytes), est.quant, est.decode.max_rows,
                 "?" if avail is None else memory.gb(avail), source)
        meter = memory.peak_meter() if dev.type != "cuda" else None  # CUDA: its allocator's own peak
        with meter.loading() if meter is not None else contextlib.nullcontext():
            model = load_decoder(model_dir, device=dev, dtype=dt, load_vision=load_vision, quant=quant)
            tok = load_text_tokenizer(model_dir)
            codec = load_codec(dac_path, device=dev)
        eng = cls(model, tok, codec, model_dir=model_dir, device=dev, dtype=dt, load_vision=load_vision,
                  window_frames=window_frames, context_frames=context_frames, decode=decode, invariant=invariant)
        eng.info["quant"] = quant_of(model)
        eng.info["memory_estimate"] = est.to_dict()
        eng.info["memory_available_bytes"] = avail
        eng.info["memory_available_source"] = source
        eng.plan(est.decode)
        from . import kernel_check

        # every kernel chosen on the real shapes now, before warm-up captures them in graphs
        eng.info["kernels"] = kernel_check.check_model(model, dt)
        log.info("kernels: %s", eng.info["kernels"])
        if warmup:
            eng.warmup()
        return eng

    def plan(self, plan: Any) -> None:
        """Apply a :class:`~.memory.DecodePlan`: the row cap of every session, and on the static
        path the budget of the decoder's buckets (released least-recently-used past it)."""
        self.decode_plan = plan
        self.max_rows = plan.max_rows
        self.info["max_rows"] = plan.max_rows
        if self.static and hasattr(self.lm, "static_decoder"):
            dec = self.lm.static_decoder()
            dec.budget_bytes = plan.budget_bytes
            if plan.arena is not None:
                dec.set_arena(*plan.arena)

    def warmup(self, lengths: tuple[int, ...] | None = None) -> int:
        """Capture the static decode graphs now, so no request pays for a capture: the buckets of
        the memory plan (those that fit, in its order), or every row bucket up to the row cap x
        ``lengths`` KV slots. Nothing to do on the eager path or off CUDA. Returns graphs captured."""
        if not self.static or self.device.type != "cuda":
            return 0
        from . import memory

        if lengths is not None or self.decode_plan is None:
            lengths = lengths or memory.default_lengths(self.window_frames)
            rows = [r for r in self.lm.static_decoder().row_buckets if r <= (self.max_rows or memory.MAX_ROWS)]
            shapes = [(r, L) for r in rows for L in lengths]
        else:
            shapes = list(self.decode_plan.warm)
        with self._lock, torch.inference_mode():
            t0 = time.monotonic()
            n = self.lm.static_decoder().warmup(shapes, invariant_steps=self.invariant)
            self.info["warmup_s"] = round(time.monotonic() - t0, 3)
            self.info["graphs"] = n
            return n

    def memory_report(self) -> dict[str, Any]:
        """For status (any thread): the measured peak (CUDA ``max_memory_allocated``, else the
        process peak RSS), the row cap, whether steps are batch-invariant, and on the static path the buckets held, their bytes,
        their budget and how many were released under pressure."""
        from . import memory

        peak, how = memory.measured_peak(self.device)
        out: dict[str, Any] = {"peak_bytes": peak, "peak_source": how, "max_rows": self.max_rows,
                               "batch_invariant": self.invariant}
        lm = self.lm
        if self.static and lm is not None and hasattr(lm, "static_decoder"):
            try:
                st = lm.static_decoder().stats()
            except RuntimeError:  # the worker changed the pool meanwhile: leave the figures out
                return out
            out.update(buckets=len(st["buckets"]), bucket_bytes=st["bytes"], bucket_budget_bytes=st["budget_bytes"],
                       bucket_evictions=st["evictions"])
        return out

    def close(self) -> None:
        """Drop the model and codec (memory is freed when the last reference goes)."""
        with self._lock:
            self._closed = True
            self.model = None
            self.codec = None
            self.lm = None  # type: ignore[assignment]
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _check_open(self) -> None:
        if self._closed:
            raise UniMoEError("the engine is closed", field="engine")

    # -- pieces used by tasks ---------------------------------------------------------------------
    def decode_codes(self, codes: np.ndarray) -> np.ndarray:

        return codec_decode(self.codec, codes)

    def encode_audio(self, audio: np.ndarray) -> np.ndarray:

        return codec_encode(self.codec, audio)

    def encode_reference(self, path: str, field: str = "reference_audio") -> np.ndarray:

        audio = load_reference(path, field=field, max_seconds=T.REFERENCE_MAX_SECONDS)
        codes = self.encode_audio(audio)
        if codes.shape[0] < 1:
            raise InvalidInput("the recording is too short", field=field, wanted="a recording of at least 1 s")
        return codes

    def video_duration(self, path: str, field: str = "video") -> float:

        return video_duration(path, field=field)

    def video_input(self, path: str, t_in: float, t_out: float, fps: float, max_frames: int, field: str = "video"):

        return video_input(path, t_in, t_out, fps, max_frames, field=field)

    def fit_length(self, audio: np.ndarray, n: int) -> np.ndarray:

        return fit_length(audio, n)

    def session(self) -> DecodeSession:
        """A new continuous decode session on this engine's model (generation.DecodeSession)."""
        self._check_open()
        return DecodeSession(self.lm, placeholder_id=self.placeholder_id, video_token_id=self.video_token_id,
                             delays=self.delays, static=self.static, max_rows=self.max_rows,
                             invariant=self.invariant)

    def job_batch(self, fit: bool = True) -> JobBatch:
        """A continuous batch of jobs (model/scheduler.py): ``add(engine.prepare(...))`` between steps. ``fit``:
        the results are trimmed/padded to their exact length at 16 kHz; False for a caller that renders them at
        another rate and fits there, once (the daemon: ``daemon/outputs.render``)."""
        return JobBatch(self.session(), self.decode_codes, self.fit_length if fit else None)

    def prepare(self, request: Any, progress: ProgressCallback | None = None) -> T.Job:
        """Validate ``request`` and plan it (prompts, lengths, reference encoding): a job for a
        :meth:`job_batch`. Raises on invalid input."""
        with self._lock:
            self._check_open()
            task = T.task_of(request)
            rep = T.Reporter(progress)
            rep("prepare", 0.0)
            plan = T.PREPARE[task](self, request, rep)
            return T.Job(task, plan, rep, window_frames=self.window_frames, context_frames=self.context_frames,
                         decode=self.decode_codes, stream_every=getattr(request, "stream_every", None))

    # -- public API -------------------------------------------------------------------------------
    def speech(self, req: SpeechRequest, progress: ProgressCallback | None = None) -> AudioResult:
        return self._run_one("speech", req, progress)

    def music(self, req: MusicRequest, progress: ProgressCallback | None = None) -> AudioResult:
        return self._run_one("music", req, progress)

    def video_score(self, req: VideoScoreRequest, progress: ProgressCallback | None = None) -> AudioResult:
        return self._run_one("video_score", req, progress)

    def _run_one(self, task: str, req: Any, progress: ProgressCallback | None) -> AudioResult:
        res = self._run(task, [req], [progress], raise_prepare=True)[0]
        if isinstance(res, BaseException):
            raise res
        return res

    def run_batch(self, requests: Sequence[Any], progresses: Sequence[ProgressCallback | None] | None = None
                  ) -> list[AudioResult | BaseException]:
        """Run several requests; requests of the same task are generated together. One result (or the
        exception that stopped it) per request, in order."""
        progresses = list(progresses) if progresses is not None else [None] * len(requests)
        if len(progresses) != len(requests):
            raise InvalidInput("one progress callback per request", field="progresses")
        out: list[AudioResult | BaseException | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            try:
                groups.setdefault(T.task_of(r), []).append(i)
            except UniMoEError as exc:
                out[i] = exc
        for task, idx in groups.items():
            res = self._run(task, [requests[i] for i in idx], [progresses[i] for i in idx], raise_prepare=False)
            for i, r in zip(idx, res):
                out[i] = r
        return out  # type: ignore[return-value]

    def _run(self, task: str, reqs: list[Any], progresses: list[ProgressCallback | None], *, raise_prepare: bool
             ) -> list[AudioResult | BaseException]:
        with self._lock:
            self._check_open()
            results: list[AudioResult | BaseException | None] = [None] * len(reqs)
            jobs: list[T.Job] = []
            slots: list[int] = []
            for i, (req, cb) in enumerate(zip(reqs, progresses)):
                rep = T.Reporter(cb)
                try:
                    rep("prepare", 0.0)
                    plan = T.PREPARE[task](self, req, rep)
                except BaseException as exc:  # noqa: BLE001
                    if raise_prepare or isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    results[i] = exc
                    continue
                jobs.append(T.Job(task, plan, rep, window_frames=self.window_frames,
                                  context_frames=self.context_frames, decode=self.decode_codes,
                                  stream_every=getattr(req, "stream_every", None)))
                slots.append(i)
            if jobs:
                batch = self.job_batch()
                done: dict[int, Any] = {}
                for k, job in enumerate(jobs):
                    batch.add(job, on_done=lambda r, k=k: done.__setitem__(k, r))
                batch.run()
                for k, i in enumerate(slots):
                    results[i] = done[k]
            return results  # type: ignore[return-value]

    def encode_voice(self, audio_path: str, transcript: str) -> np.ndarray:
        """Codes [T, 12] of a reference recording, for saved voices (the transcript is checked only)."""
        with self._lock:
            self._check_open()
            T.check_text(transcript, "transcript", max_chars=2000)
            with torch.inference_mode():
                return self.encode_reference(audio_path, field="audio_path")


# --- adapters onto model-core (decoder, tokenizer) and codec (DAC, media, audio_out) ----------------------

class _Tokenizer:
    """``encode(text) -> list[int]`` with the special tokens as single ids."""

    def __init__(self, impl: Any, kind: str):
        self.impl = impl
        self.kind = kind

    def encode(self, text: str) -> list[int]:
        if self.kind == "hf":
            return list(self.impl(text, add_special_tokens=False)["input_ids"])
        return [int(i) for i in self.impl.encode(text)]


def _tokenizer_dir(model_dir: Path) -> Path:
    sub = model_dir / "tokenizer"
    return sub if sub.is_dir() else model_dir


def load_text_tokenizer(model_dir: Path) -> _Tokenizer:
    d = _tokenizer_dir(model_dir)
    try:
        from .tokenizer import load_tokenizer  # model-core's
    except ImportError:
        load_tokenizer = None
    if load_tokenizer is not None:
        return _Tokenizer(load_tokenizer(d), "core")
    try:
        from transformers import AutoTokenizer

        return _Tokenizer(AutoTokenizer.from_pretrained(str(d)), "hf")
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot load the tokenizer from {d}: {exc}", field="tokenizer") from exc


def load_decoder(model_dir: Path, *, device: torch.device, dtype: torch.dtype, load_vision: bool,
                 quant: str = "none") -> Any:
    from .checkpoint import load_model

    return load_model(model_dir, device=device, dtype=dtype, load_vision=load_vision, quant=quant)


def _as_mono_f32(audio: Any) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().float().cpu().numpy()
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 2:
        a = a.mean(axis=0) if a.shape[0] <= a.shape[1] else a.mean(axis=1)
    return np.ascontiguousarray(a.reshape(-1))


def load_codec(dac_path: Path, *, device: torch.device) -> Any:
    from . import codec as C

    if not dac_path.exists():
        raise CheckpointError(f"no DAC weights at {dac_path}", field="dac")
    try:
        return C.DacCodec.load(dac_path, device=device)
    except UniMoEError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot load the DAC from {dac_path}: {exc}", field="dac") from exc


def codec_decode(codec: Any, codes: np.ndarray) -> np.ndarray:
    """Codes [T, 12] -> float32 mono [T * 320] at 16 kHz."""
    c = torch.as_tensor(np.asarray(codes, dtype=np.int64))
    with torch.inference_mode():
        fn = getattr(codec, "decode_chunks", None) or codec.decode
        out = fn(c)
    return _as_mono_f32(out)


def codec_encode(codec: Any, audio: np.ndarray) -> np.ndarray:
    """float32 mono 16 kHz -> codes [T, 12] int64."""
    with torch.inference_mode():
        codes = codec.encode(torch.from_numpy(np.array(audio, dtype=np.float32)))
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 3:
        codes = codes[0]
    if codes.shape[-1] != 12 and codes.shape[0] == 12:
        codes = codes.T
    return np.ascontiguousarray(codes)


def load_reference(path: str, *, field: str, max_seconds: float) -> np.ndarray:
    from . import media

    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise MediaError(f"no such file: {path}", field=field)
    try:
        audio = media.load_reference_voice(str(p), max_seconds=max_seconds, field=field)
    except UniMoEError as exc:
        if exc.field != field:
            raise type(exc)(exc.detail, field=field, wanted=exc.wanted) from exc
        raise
    except Exception as exc:  # noqa: BLE001
        raise MediaError(f"cannot read the recording: {exc}", field=field) from exc
    a = _as_mono_f32(getattr(audio, "audio", audio))
    a = a[: int(max_seconds * T.SAMPLE_RATE)]
    if a.size < T.HOP or not np.isfinite(a).all():
        raise InvalidInput("the recording is empty or too short", field=field, wanted="a recording of at least 1 s")
    if float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) < 1e-4:
        raise InvalidInput("the recording is silent", field=field, wanted="a recording of the voice")
    return a


def video_duration(path: str, *, field: str) -> float:
    from . import media

    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise MediaError(f"no such file: {path}", field=field)
    try:
        d = float(media.video_duration(str(p), field=field))
    except UniMoEError as exc:
        if exc.field != field:
            raise MediaError(exc.detail, field=field, wanted=exc.wanted) from exc
        raise
    except Exception as exc:  # noqa: BLE001
        raise MediaError(f"cannot read the video: {exc}", field=field) from exc
    if not d > 0:
        raise MediaError("the video has no frames", field=field)
    return d


def video_input(path: str, t_in: float, t_out: float, fps: float, max_frames: int, *, field: str) -> Any:
    from . import media
    from .video_preprocess import preprocess_video

    try:
        frames = media.extract_frames(str(path), t_in, t_out, fps=fps, max_frames=max_frames, field=field)
    except UniMoEError as exc:
        if exc.field != field:
            raise MediaError(exc.detail, field=field, wanted=exc.wanted) from exc
        raise
    except Exception as exc:  # noqa: BLE001
        raise MediaError(f"cannot read frames: {exc}", field=field) from exc
    arr = np.asarray(getattr(frames, "frames", frames))
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise MediaError("the video has no frames in that range", field=field)
    span = t_out - t_in
    # media.extract_frames lowers the rate so max_frames still span the range
    eff_fps = float(fps) if span * fps <= max_frames else max_frames / span
    return preprocess_video(arr, fps=eff_fps)


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    from . import audio_out

    out = audio_out.fit_length(np.asarray(audio, dtype=np.float32).reshape(1, -1), int(n), T.SAMPLE_RATE)
    return _as_mono_f32(out)
