"""The model host: resolves which model to serve, loads it (on first use or at start), unloads it after
an idle ``keep_alive``, and reports its state. Only the worker thread calls load/unload/engine; status
readers on the main thread read plain attributes.
"""
from __future__ import annotations

import gc
import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..client.model_pull import pull_state_problem
from ..client.protocol import ErrorReply
from ..client.settings import TINY_MODEL, Settings
from .logs import get_logger

log = get_logger("model")


def error_from_exception(exc: BaseException, *, default_code: str = "internal") -> ErrorReply:
    """A typed ErrorReply for any exception the model layer (or the daemon) raised."""
    from ..model.errors import UniMoEError, as_device_fault, is_device_fault

    if not isinstance(exc, UniMoEError) and is_device_fault(exc):
        exc = as_device_fault(exc)
    if isinstance(exc, UniMoEError):
        return ErrorReply(code=exc.code, message=exc.detail, field=exc.field, wanted=exc.wanted)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        return ErrorReply(code="out_of_memory", message=text,
                          wanted="a smaller max_batch or length, another device, or dtype float16/bfloat16")
    if isinstance(exc, FileNotFoundError):
        return ErrorReply(code="not_found", message=text)
    return ErrorReply(code=default_code, message=text)


def fingerprint(model_dir: Path) -> str:
    """A cheap model hash: config files in full, plus name, size and first MiB of every weight file."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in files:
        rel = p.relative_to(model_dir).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with p.open("rb") as fh:
            h.update(fh.read(1 << 20 if p.suffix not in (".json", ".txt") else 1 << 24))
    return h.hexdigest()[:16]


def process_rss() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        try:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        except Exception:  # pragma: no cover
            return None


def flagged_tiny(model_dir: Path) -> tuple[bool, str | None]:
    """A model folder made by 'models make-tiny' says so in its own config.json (``unimoe_audio_tiny``):
    served by path it is still random noise, and clients must be told."""
    try:
        import json

        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False, None
    if isinstance(cfg, dict) and cfg.get("unimoe_audio_tiny"):
        return True, (f"{model_dir} is a random-weight model made by 'models make-tiny' (its config.json has "
                      "unimoe_audio_tiny: true)")
    return False, None


class ModelHost:
    def __init__(self, settings: Settings, on_state: Callable[[str, ErrorReply | None], None] | None = None,
                 on_dead_context: Callable[[str], None] | None = None):
        self.settings = settings
        self.on_state = on_state or (lambda s, e: None)
        # the daemon restarts itself in a fresh process (server.run) when the device context is dead
        self.on_dead_context = on_dead_context or (lambda why: None)
        self.state = "idle"  # idle | loading | ready | error | unloaded
        self.error: ErrorReply | None = None
        self.engine: Any = None
        self.model_dir: Path | None = None
        self.model_hash: str | None = None
        self.model_id: str | None = None
        self.tiny = False
        self.tiny_reason: str | None = None
        self.tiny_builtin = False  # tiny because no real model is installed (not a make-tiny folder)
        self.peek()
        self.device: str | None = None
        self.dtype: str | None = None
        self.quant: str | None = None
        self.memory_estimate: int | None = None  # bytes the loaded (or last refused) model needs
        self.memory_available: int | None = None
        self.memory_source: str | None = None
        self.kernels: dict | None = None  # which kernel each class of linear got (model/kernels.py)
        self.last_used = time.monotonic()
        self.loaded_at: float | None = None
        self.faults = 0  # accelerator errors since the daemon started (each failed the jobs in flight)
        self.last_fault: ErrorReply | None = None
        self._dead_context: str | None = None  # why the device cannot be used again in this process
        self._lock = threading.RLock()

    # -- which model -----------------------------------------------------------------------------
    def find_real(self) -> tuple[Path | None, str | None]:
        """(the configured real model's folder, None) or (None, why the tiny model serves instead)."""
        s = self.settings
        if s.model == TINY_MODEL:
            return None, "model = 'tiny'"
        candidates = [Path(s.model).expanduser()] if os.sep in s.model or s.model.startswith((".", "~")) else []
        candidates.append(s.models_path / s.model)
        for c in candidates:
            if c.is_dir() and (c / "config.json").is_file():
                unfinished = pull_state_problem(c)
                if unfinished:  # a killed or refused pull is not a model: say so rather than fail every job
                    return None, f"{c}: {unfinished}; serving the tiny random model"
                return c.resolve(), None
        return None, (f"no weights for model {s.model!r} under {s.models_path} "
                      "(run 'unimoe-audio models pull'); serving the tiny random model")

    def peek(self) -> None:
        """Set tiny/tiny_reason from what is installed, without loading anything."""
        path, reason = self.find_real()
        self.tiny, self.tiny_reason = (True, reason) if path is None else flagged_tiny(path)
        self.tiny_builtin = path is None
        if self.engine is None:
            self.model_dir = path  # the folder that will serve, named by status before the first load

    def resolve(self) -> tuple[Path, bool, str | None]:
        """(model folder, tiny?, why tiny). Builds the tiny model when needed."""
        s = self.settings
        path, reason = self.find_real()
        if path is not None:
            return (path, *flagged_tiny(path))
        from ..model.tiny_bundle import ensure_tiny_model

        path = Path(ensure_tiny_model(s.cache_path / "tiny-model"))
        return path, True, reason

    # -- load / unload (worker thread) -----------------------------------------------------------
    def _set(self, state: str, error: ErrorReply | None = None) -> None:
        self.state = state
        self.error = error
        try:
            self.on_state(state, error)
        except Exception:  # pragma: no cover - never let a notification break loading
            log.exception("state callback failed")

    def ensure_loaded(self) -> Any:
        with self._lock:
            self.last_used = time.monotonic()
            if self.engine is not None:
                return self.engine
            if self._dead_context is not None:
                err = ErrorReply(code="device_fault", message=self._dead_context,
                                 wanted="restart the daemon (unimoe-audio serve) to get a fresh GPU context")
                self._set("error", err)
                raise ModelLoadFailed(err)
            self._set("loading")
            t0 = time.monotonic()
            try:
                model_dir, tiny, reason = self.resolve()
                self.tiny, self.tiny_reason = tiny, reason
                self.tiny_builtin = tiny and self.find_real()[0] is None
                if tiny:
                    log.warning("serving the built-in TINY random model (it makes noise, not speech or music): %s",
                                reason)
                from ..model.engine import Engine

                s = self.settings
                engine = Engine.load(model_dir, dac=s.dac, device=s.device, dtype=s.dtype, load_vision=True,
                                     quant=s.quant, memory_budget_gb=s.memory_budget, decode=s.decode,
                                     invariant=s.batch_invariant)
            except BaseException as exc:  # noqa: BLE001 - every failure becomes a clear error, daemon stays up
                self._note_refusal(exc)
                err = error_from_exception(exc, default_code="model_error")
                if err.code == "internal":
                    err.code = "model_error"
                err.message = f"loading the model failed: {err.message}"
                log.exception("model load failed")
                self._set("error", err)
                gc.collect()
                raise ModelLoadFailed(err) from exc
            self.engine = engine
            self.model_dir = model_dir
            info = getattr(engine, "info", {}) or {}
            self.model_hash = info.get("sha256")
            if not self.model_hash:
                try:
                    self.model_hash = fingerprint(model_dir)
                except OSError:
                    self.model_hash = None
            self.model_id = str(info.get("model_id") or model_dir.name)
            self.device = str(info.get("device", s.device))
            self.dtype = str(info.get("dtype", s.dtype))
            self.quant = str(info.get("quant", "none"))
            self.memory_estimate = (info.get("memory_estimate") or {}).get("total_bytes")
            self.memory_available = info.get("memory_available_bytes")
            self.memory_source = info.get("memory_available_source")
            self.kernels = info.get("kernels")
            self.loaded_at = time.time()
            self.last_used = time.monotonic()
            log.info("model loaded from %s in %.2f s (device %s, dtype %s, quant %s%s)", model_dir,
                     time.monotonic() - t0, self.device, self.dtype, self.quant, ", TINY" if self.tiny else "")
            self._set("ready")
            return engine

    def _note_refusal(self, exc: BaseException) -> None:
        """Keep the estimate of a refused load for status (the error message names the options)."""
        est = getattr(exc, "estimate", None)
        if est is not None:
            self.memory_estimate = getattr(est, "total_bytes", None)
            self.memory_available = getattr(exc, "available", None)
            self.memory_source = getattr(exc, "source", None)

    def unload(self, reason: str = "") -> bool:
        with self._lock:
            if self.engine is None:
                return False
            engine, self.engine = self.engine, None
            try:
                engine.close()
            except Exception:  # noqa: BLE001
                log.exception("engine.close failed")
            del engine
            gc.collect()
            torch = sys.modules.get("torch")  # never import torch just to unload
            if torch is not None:
                try:
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                except Exception:  # noqa: BLE001
                    pass
            log.info("model unloaded%s", f" ({reason})" if reason else "")
            self._set("unloaded")
            return True

    def device_fault(self, exc: BaseException) -> None:
        """The accelerator failed (a CUDA error; the jobs in flight already failed with it): log it,
        drop the engine (its graphs, caches and weights belong to the faulted context) and check the
        device, so the next job loads the model anew in a fresh context. A context that a sticky
        error left unusable (a device-side assert) cannot be renewed inside this process: then the
        model host goes to ``error`` with a ``device_fault`` and asks the daemon (``on_dead_context``)
        to restart itself in a fresh process, where the queued jobs run on a new context."""
        with self._lock:
            self.faults += 1
            self.last_fault = error_from_exception(exc)
            log.error("device fault #%d: %s; the jobs in flight failed, the model is reloaded before the next job",
                      self.faults, exc)
            self.unload("device fault")
            why = _probe_device(self.device)
            if why is not None:
                self._dead_context = f"the GPU context is unusable after a device fault ({why})"
                log.error("%s: the daemon restarts in a fresh process", self._dead_context)
                self._set("error", ErrorReply(code="device_fault", message=self._dead_context))
                self.on_dead_context(self._dead_context)

    def idle_expired(self) -> bool:
        ka = self.settings.keep_alive
        return self.engine is not None and ka > 0 and time.monotonic() - self.last_used >= ka

    def touch(self) -> None:
        self.last_used = time.monotonic()

    # -- reporting (any thread) ------------------------------------------------------------------
    def memory(self) -> dict[str, int | str | None]:
        out: dict[str, int | str | None] = {"rss_bytes": process_rss(), "estimate_bytes": self.memory_estimate,
                                            "available_bytes": self.memory_available,
                                            "available_source": self.memory_source}
        engine = self.engine
        report = getattr(engine, "memory_report", None)
        if report is not None:
            try:
                out.update(report())
            except Exception:  # noqa: BLE001 - status must answer even if the engine is mid-change
                pass
        rss, peak = out.get("rss_bytes"), out.get("peak_bytes")
        if isinstance(rss, int) and isinstance(peak, int) and str(out.get("peak_source", "")).startswith("process") \
                and rss > peak:
            out["peak_bytes"] = rss  # the sampled peak missed a moment between two samples: at least now
        torch = sys.modules.get("torch")
        if torch is not None and self.engine is not None and (self.device or "").startswith("cuda"):
            try:

                out["device_allocated_bytes"] = int(torch.cuda.memory_allocated())
                out["device_total_bytes"] = int(torch.cuda.get_device_properties(0).total_memory)
            except Exception:  # noqa: BLE001
                pass
        return out

    def display_name(self) -> str:
        return self.settings.model


def _probe_device(device: str | None) -> str | None:
    """None when ``device`` still runs a kernel after a fault; else what went wrong."""
    from ..model.scheduler import simulated_dead_context

    if simulated_dead_context():
        return "a simulated sticky fault (UNIMOE_AUDIO_SIMULATE_DEVICE_FAULT)"
    if not (device or "").startswith("cuda"):
        return None
    try:
        import torch

        torch.cuda.synchronize(device)
        x = torch.ones(8, device=device)
        if float((x + x).sum()) != 16.0:
            return "a probe kernel gave a wrong result"
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means the context is gone
        return f"{type(exc).__name__}: {exc}"


class ModelLoadFailed(Exception):
    def __init__(self, error: ErrorReply):
        super().__init__(error.message)
        self.error = error
