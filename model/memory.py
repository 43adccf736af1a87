"""How much memory a model needs before it is loaded, how much the device has, and how much it used.

    est = estimate(model_dir, dtype=torch.float32, quant="none", load_vision=True, avail=avail)
    est.total_bytes        # weights + the larger of (load transients, what running keeps)
    est.decode             # DecodePlan: the row cap, the static buckets warm-up captures, workspaces
    check_fits(model_dir, est, avail, source)    # MemoryTooSmall with advice
    measured_peak(device)  # (bytes, how measured): CUDA max_memory_allocated, else the process peak RSS

Unit: bytes everywhere; figures are printed in GB (10^9 bytes, ``GB``).

Everything is computed from ``config.json`` and the safetensors headers (no tensor is read), so the
daemon can refuse a load that would be killed by the OOM killer and say what would fit instead
("needs 28.6 GB, 22.1 GB free: use dtype bfloat16 or quant int8").

What running keeps (``runtime_bytes``), part by part (``Estimate.parts``):

* ``buckets`` (static decode, the CUDA default): the KV arena of ``max_rows x slots`` that every
  :class:`~.decoder.StaticBatch` is a view of (:func:`arena_bytes`: one at a time steps, so they
  share it, as vLLM's blocks or gpt-fast's one static cache do), plus each bucket warm-up captures:
  its static inputs and the logits its graph keeps (:func:`bucket_extra_bytes`). Warm-up captures only the buckets that fit the memory left after the
  weights (:func:`plan_decode`); buckets made later are released least-recently-used when the
  budget is reached (``StaticDecoder``).
* ``kv_cache`` (eager decode, the CPU default): the packed cache of ``max_rows`` rows x
  ``KV_TOKENS``, twice (a join copies the rows into a new cache).
* ``graph_pool`` / ``prefill``: the activations of one decode step (what the shared graph pool
  holds) and of one prefill of ``max_rows`` rows x ``PREFILL_TOKENS``.
* ``codec`` (the DAC) and ``framework`` (allocator caches, kernels' workspaces, Python objects).

``max_rows`` caps the decode rows in flight (a CFG item takes 2): items past it wait for rows to
free (``DecodeSession``), so sentence chunking of a long speech cannot grow the batch, and its
buckets, without bound. It is the largest row bucket whose decode room fits the memory left.

What the device has: the ``memory_budget`` setting when given (``UNIMOE_AUDIO_MEMORY_BUDGET``, in
GB; a cap you choose, e.g. to leave room for a DAW), else CUDA's free memory
(``torch.cuda.mem_get_info``), else the system's available memory (``MemAvailable``, bounded by a
cgroup v2 ``memory.max`` when the process runs in a container). MPS shares system memory.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .errors import UniMoEError

GB = 1e9
_DT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1}
# the framework itself once the model runs (allocator caches, kernels' workspaces, Python objects)
_RUNTIME_OVERHEAD = {"cpu": 0.3 * GB, "cuda": 0.6 * GB, "mps": 0.5 * GB}
MAX_ROWS = 16  # decode rows in flight at most (8 CFG items): the largest static row bucket
KV_TOKENS = 2048  # slots of a row: one 19.6 s window plus its prompt
PREFILL_TOKENS = 600  # a typical prompt: 5 s of context frames, the text, a reference voice


class MemoryTooSmall(UniMoEError):
    """The configured model, dtype and quantization do not fit the memory the device has."""

    code = "out_of_memory"


# --- what decoding keeps: KV rows, static buckets, workspaces ---------------------------------------

@dataclass(frozen=True)
class Dims:
    """The numbers of a config that decode memory depends on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    routed: int  # routed experts per layer
    shared: int  # shared experts per layer
    inner: int  # a routed expert's intermediate size
    codebooks: int
    vocab: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "Dims":
        t = cfg.get("text_config", cfg)
        heads = int(t.get("num_attention_heads", 1))
        hidden = int(t.get("hidden_size", 0))
        return cls(layers=int(t.get("num_hidden_layers", 0)), hidden=hidden, heads=heads,
                   kv_heads=int(t.get("num_key_value_heads", heads)), head_dim=hidden // max(heads, 1),
                   routed=int(t.get("mlp_dynamic_expert_num", 0)), shared=int(t.get("mlp_fixed_expert_num", 0)),
                   inner=int(t.get("dynamic_intermediate_size", t.get("intermediate_size", 0))),
                   codebooks=int(cfg.get("codec_channels", 12)), vocab=int(cfg.get("codec_vocab_size", 1027)))

    @classmethod
    def of(cls, config: Any) -> "Dims":
        """From a loaded model's :class:`~.config.ModelConfig`."""
        t = config.text
        return cls(layers=t.num_hidden_layers, hidden=t.hidden_size, heads=t.num_attention_heads,
                   kv_heads=t.num_key_value_heads, head_dim=t.head_dim, routed=t.num_routed_experts,
                   shared=t.num_shared_experts, inner=t.dynamic_intermediate_size,
                   codebooks=config.codec_channels, vocab=config.codec_vocab_size)

    def kv_bytes(self, rows: int, slots: int, wb: int) -> int:
        """K and V of every layer for ``rows`` x ``slots``, plus the key-valid mask."""
        return 2 * self.layers * rows * self.kv_heads * slots * self.head_dim * wb + rows * slots


def bucket_extra_bytes(d: Dims, rows: int, slots: int, wb: int) -> int:
    """What a static decode bucket keeps beside its KV: its static inputs and (captured) the fp32
    logits its graph writes, which live in the graph pool."""
    static_inputs = rows * d.hidden * wb + 3 * rows * 8 + rows + slots * 8  # emb, pos/slots/rows, true, arange
    return static_inputs + rows * d.codebooks * d.vocab * 4


def bucket_bytes(d: Dims, rows: int, slots: int, wb: int) -> int:
    """A bucket with a KV cache of its own (one that does not fit the arena): KV + the rest."""
    return d.kv_bytes(rows, slots, wb) + bucket_extra_bytes(d, rows, slots, wb)


def arena_bytes(d: Dims, rows: int, slots: int, wb: int) -> int:
    """The KV arena the buckets share (``StaticDecoder``): ``rows`` x ``slots`` once, for all of them."""
    return d.kv_bytes(rows, slots, wb)


def step_workspace_bytes(d: Dims, rows: int, slots: int, wb: int) -> int:
    """Activations alive at once in one decode step (the graph pool of a capture): the largest of the
    sync-free MoE (every routed expert on every row, fp32 mix), attention over the slots, the head."""
    moe = d.routed * rows * (3 * d.inner * wb + d.hidden * (wb + 8))
    attn = rows * d.heads * slots * 4 * 2 + rows * slots * 2
    head = rows * d.codebooks * d.vocab * (wb + 4)
    return max(moe, attn, head) + 4 * rows * d.hidden * 4


def prefill_workspace_bytes(d: Dims, rows: int, tokens: int, wb: int) -> int:
    """Activations alive at once in a prefill of ``rows`` x ``tokens``: the hidden states, K/V
    repeated to every head, the attention scores (the math kernel materialises them), the grouped
    MoE's gathered pairs in fp32, and the last position's logits."""
    t = rows * tokens
    hidden = 4 * t * d.hidden * wb
    kv = 2 * rows * d.heads * tokens * d.head_dim * wb
    scores = rows * d.heads * tokens * tokens * 4
    moe = 2 * t * (d.hidden * 4 + 2 * d.inner * wb)
    return hidden + max(kv + scores, moe) + rows * d.codebooks * d.vocab * 4


def default_lengths(window_frames: int = 981) -> tuple[int, ...]:
    """KV-slot buckets warm-up captures: a short request, and a full window with its prompt."""
    from .buckets import length_bucket

    return tuple(sorted({length_bucket(512), length_bucket(1024), length_bucket(window_frames + 600)}))


@dataclass
class DecodePlan:
    """How decoding will use memory (see the module docstring)."""

    static: bool
    max_rows: int
    warm: list[tuple[int, int]] = field(default_factory=list)  # (rows, slots) captured at load, in order
    bucket_bytes: int = 0  # the warm buckets together
    budget_bytes: int | None = None  # the buckets may hold at most this (None: no limit known)
    kv_bytes: int = 0  # eager: the packed cache (and the copy a join makes)
    workspace_bytes: int = 0  # one decode step's activations
    prefill_bytes: int = 0  # one prefill's activations
    arena: tuple[int, int] | None = None  # static: (rows, slots) of the KV arena the buckets share

    @property
    def total_bytes(self) -> int:
        return self.bucket_bytes + self.kv_bytes + self.workspace_bytes + self.prefill_bytes


def plan_decode(d: Dims, wb: int, *, static: bool, room: int | None, lengths: tuple[int, ...] | None = None,
                max_rows: int = MAX_ROWS, kv_tokens: int = KV_TOKENS,
                prefill_tokens: int = PREFILL_TOKENS) -> DecodePlan:
    """The row cap and warm-up buckets for ``room`` bytes left after weights, codec and framework
    (None: unknown, plan everything up to ``max_rows``).

    The row cap is the largest row bucket whose decode room fits: for static decode the biggest
    bucket plus the next smaller (rows move between them) plus the workspaces; for eager decode the
    packed cache twice. Warm-up then takes buckets in order (2 rows at every length, then 4, ...)
    while they fit what is left after the workspaces."""
    from .buckets import ROW_BUCKETS

    lengths = tuple(sorted(lengths or default_lengths()))
    rows_opts = [r for r in ROW_BUCKETS if r <= max_rows] or [ROW_BUCKETS[0]]
    top = max(lengths[-1], kv_tokens) if static else kv_tokens

    def need(r: int) -> tuple[int, int, int]:
        ws = step_workspace_bytes(d, r, top, wb)
        pf = prefill_workspace_bytes(d, r, prefill_tokens, wb)
        if static:  # the arena of r rows, the biggest bucket's extras and the next smaller's (rows move)
            smaller = max([b for b in rows_opts if b < r], default=0)
            core = arena_bytes(d, r, top, wb) + bucket_extra_bytes(d, r, top, wb) + (
                bucket_extra_bytes(d, smaller, top, wb) if smaller else 0)
        else:
            core = 2 * d.kv_bytes(r, kv_tokens, wb)
        return core, ws, pf

    cap = rows_opts[0]
    for r in rows_opts:
        if room is None or sum(need(r)) <= room:
            cap = r
    core, ws, pf = need(cap)
    plan = DecodePlan(static=static, max_rows=cap, workspace_bytes=ws, prefill_bytes=pf)
    if not static:
        plan.kv_bytes = core
        return plan
    plan.budget_bytes = None if room is None else max(room - ws - pf, core)
    plan.arena = (cap, top)
    used = arena_bytes(d, cap, top, wb)  # made with the first bucket; every warm bucket is a view of it
    for r in (r for r in rows_opts if r <= cap):
        for L in lengths:
            b = bucket_extra_bytes(d, r, L, wb)
            if plan.budget_bytes is not None and used + b > plan.budget_bytes:
                continue
            plan.warm.append((r, L))
            used += b
    # what the step needs even when nothing was warmed (rows move into the largest bucket on demand)
    plan.bucket_bytes = max(used, core)
    return plan


@dataclass
class Estimate:
    device: str
    dtype: str
    quant: str
    weights_bytes: int = 0  # the loaded weights (quantized linears at their packed size)
    transient_bytes: int = 0  # extra during loading / first forward (one tensor in fp32, one layer restacked)
    runtime_bytes: int = 0  # what running keeps beside the weights (parts: decode plan, codec, framework)
    parts: dict[str, int] = field(default_factory=dict)
    decode: DecodePlan | None = None

    @property
    def total_bytes(self) -> int:
        """The peak: loading's transients are gone before decoding's buffers are made."""
        return self.weights_bytes + max(self.transient_bytes, self.runtime_bytes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        return d


def _headers(folder: Path) -> list[dict[str, Any]]:
    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
    out = []
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            out.append(json.loads(fh.read(n)))
    return out


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def folder_specs(folder: Path) -> list[tuple[str, str, list[int]]]:
    """(on-disk name, safetensors dtype, shape) of every tensor of a model folder (headers only)."""
    return [(k, v["dtype"], [int(d) for d in v["shape"]]) for h in _headers(folder) for k, v in h.items()
            if k != "__metadata__"]


def estimate(model_dir: str | Path, *, dtype: torch.dtype, quant: str = "none", device: str = "cpu",
             load_vision: bool = True, avail: int | None = None, static: bool | None = None,
             max_rows: int = MAX_ROWS) -> Estimate:
    """Memory the model in ``model_dir`` needs with ``dtype`` and ``quant`` (see the module
    docstring). ``avail``: the bytes the device has (sizes the decode plan); ``static``: static
    decode buckets (None: the default, on CUDA)."""
    from . import quant as Q

    folder = Path(model_dir)
    stored = Q.folder_quant(folder)
    cfg = json.loads((folder / "config.json").read_text())
    dac = folder / "dac"
    dac_bytes = sum(p.stat().st_size for p in dac.rglob("*") if p.is_file()) if dac.is_dir() else 0
    return estimate_specs(folder_specs(folder), cfg, stored=stored, dtype=dtype, quant=quant, device=device,
                          load_vision=load_vision, dac_bytes=dac_bytes, avail=avail, static=static,
                          max_rows=max_rows)


def estimate_specs(specs: list[tuple[str, str, list[int]]], cfg: dict[str, Any], *, stored: str, dtype: torch.dtype,
                   quant: str, device: str, load_vision: bool, dac_bytes: int, avail: int | None = None,
                   static: bool | None = None, max_rows: int = MAX_ROWS) -> Estimate:
    """:func:`estimate` from tensor specs and a config dict (also for sizes whose weights are absent)."""
    from . import quant as Q
    from .keys import normalize_key

    method = stored if stored != "none" else Q.check_method(quant)
    wb = _dtype_bytes(dtype)
    dev = torch.device(device).type
    est = Estimate(device=dev, dtype=str(dtype).replace("torch.", ""), quant=method)
    weights = 0
    largest = 0
    per_layer_experts: dict[str, int] = {}
    for disk, sdt, shape in specs:
        name = normalize_key(disk)
        if (name.startswith("visual.") and not load_vision) or name == "lm_head.weight":
            continue
        numel = 1
        for d in shape:
            numel *= d
        mod, _, leaf = name.rpartition(".")
        if Q.is_quantized_linear(mod) and method != "none":
            if stored != "none":  # packed codes and scales as stored (+ int4 scales in the act dtype)
                b = numel * _DT_BYTES.get(sdt, 4)
                if leaf == "scale_zeros" and wb > 2:
                    b = b * wb // 2
            elif leaf == "weight":
                n, k = shape
                if method == "int8":
                    b = n * k + 4 * n
                else:
                    g, np_, kp = Q.int4_layout(n, k)
                    b = np_ * kp // 2 + (kp // g) * np_ * 2 * max(wb, 2)
            else:  # bias
                b = numel * wb
            largest = max(largest, numel * 4 * 3)  # quantizing works on one weight in fp32
        else:
            is_float = sdt.startswith(("F", "BF"))
            b = numel * (wb if is_float else _DT_BYTES.get(sdt, 4))
            largest = max(largest, numel * 4 if dev == "cpu" else numel * wb)
        weights += b
        if ".experts.deepspeed_experts." in name and method == "none":
            layer = name.split(".mlp.")[0]
            per_layer_experts[layer] = per_layer_experts.get(layer, 0) + b
    est.weights_bytes = int(weights)
    # load: one tensor converted at a time; first forward: one layer's experts restacked at a time
    est.transient_bytes = int(largest + max(per_layer_experts.values(), default=0))
    overhead = int(_RUNTIME_OVERHEAD.get(dev, 0.3 * GB))
    static = dev == "cuda" if static is None else bool(static)
    room = None if avail is None else avail - est.weights_bytes - dac_bytes - overhead
    plan = plan_decode(Dims.from_config(cfg), wb, static=static, room=room, max_rows=max_rows)
    est.decode = plan
    est.parts = {"buckets" if static else "kv_cache": plan.bucket_bytes if static else plan.kv_bytes,
                 "graph_pool" if static else "step": plan.workspace_bytes, "prefill": plan.prefill_bytes,
                 "codec": int(dac_bytes), "framework": overhead}
    est.runtime_bytes = int(sum(est.parts.values()))
    return est


class PeakMeter:
    """A process's peak memory (``pid``, default this one), sampled from /proc/PID/status every
    ``every`` seconds by a daemon thread (Linux). While a model loads (:meth:`loading`, or until the
    ``loaded`` predicate holds, for a process watched from outside) it counts anonymous memory only
    (RssAnon + RssShmem): the weight files the loader maps are page cache being read, which the
    system drops under pressure and the loader copies out of; otherwise the whole resident set. The
    kernel's high-water mark (VmHWM, kept in ``hwm``) counts those file pages too: at full size 16.9 GB
    against 14.9 for bf16 and 7.0 against 5.5 for int4 (bench/bench_fullsize.py watches its daemons
    with this meter)."""

    def __init__(self, every: float = 0.1, start: bool = True, pid: int | None = None,
                 loaded: Callable[[], bool] | None = None):
        self.every = every
        self.path = f"/proc/{pid or 'self'}/status"
        self.peak_loading = 0  # anonymous memory while loading
        self.peak_running = 0  # the resident set otherwise
        self.hwm = 0
        self._loaded = loaded
        self._loads = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="peak-meter", daemon=True)
            self._thread.start()

    @property
    def peak(self) -> int:
        return max(self.peak_loading, self.peak_running)

    def _status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with open(self.path) as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
        return out

    def sample(self) -> int:
        """Read the process's memory now, fold it into the peak; returns what counted."""
        s = self._status()
        anon = s.get("RssAnon", 0) + s.get("RssShmem", 0)
        loading = self._loads > 0 or (self._loaded is not None and not self._loaded())
        with self._lock:
            self.hwm = max(self.hwm, s.get("VmHWM", 0))
            if loading:
                self.peak_loading = max(self.peak_loading, anon)
                return anon
            now = anon + s.get("RssFile", 0)
            self.peak_running = max(self.peak_running, now)
            return now

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        with self._lock:
            self._loads += 1
        try:
            yield
        finally:
            self.sample()
            with self._lock:
                self._loads -= 1

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.sample()
            except (OSError, ValueError):  # the watched process is gone
                return
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(5)


_meter: PeakMeter | None = None
_meter_lock = threading.Lock()


def peak_meter() -> PeakMeter | None:
    """The process's :class:`PeakMeter`, started on first use (None where /proc is missing)."""
    global _meter
    with _meter_lock:
        if _meter is None and Path("/proc/self/status").is_file():
            _meter = PeakMeter()
        return _meter


def measured_peak(device: torch.device | str) -> tuple[int | None, str]:
    """(peak bytes so far, how measured): ``torch.cuda.max_memory_allocated`` on CUDA (tensors only),
    else the :class:`PeakMeter`'s sampled peak once one runs, else the process's peak resident set
    (``VmHWM``/``ru_maxrss``: weights, buffers and the framework)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.max_memory_allocated(dev)), "cuda max_memory_allocated"
        except RuntimeError:
            return None, "unknown"
    if _meter is not None:
        try:
            _meter.sample()
        except (OSError, ValueError):
            pass
        if _meter.peak:
            return _meter.peak, "process peak RSS (sampled; anonymous memory while loading)"
    peak = 0
    try:  # Linux: the high-water mark of the resident set, never below the current RSS
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = max(peak, int(kb) * (1 if os.uname().sysname == "Darwin" else 1024))
    except (ImportError, OSError, AttributeError):
        pass
    if peak:
        return peak, "process peak RSS"
    return None, "unknown"


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def system_available() -> int | None:
    """Available system memory in bytes (Linux MemAvailable, bounded by a cgroup limit), or None."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        try:  # macOS and others: total physical memory (an upper bound)
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    cg = _cgroup_available()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def available_bytes(device: torch.device, budget_gb: float | None = None) -> tuple[int | None, str]:
    """(bytes the model may use, where the figure comes from)."""
    if budget_gb is not None:
        return int(budget_gb * GB), "memory_budget setting"
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free), "CUDA free memory"
        except RuntimeError:
            return None, "unknown"
    return system_available(), "system available memory"


def gb(n: int) -> str:
    """Bytes in GB = 10**9 bytes, the one unit of the estimate (load log, refusal, ``status``: the
    client's ``models_store.human_bytes`` prints the same figures)."""
    return f"{n / GB:.1f} GB" if n >= 10 * GB else f"{n / GB:.2f} GB"


def advice(model_dir: str | Path, est: Estimate, avail: int, *, load_vision: bool = True) -> list[str]:
    """The settings (changed one at a time, cheapest loss first) under which the model would fit."""
    out = []
    cands: list[tuple[str, torch.dtype, str]] = []
    cur_dtype = getattr(torch, est.dtype)
    if est.dtype == "float32" and est.quant == "none":
        cands.append(("dtype bfloat16", torch.bfloat16, "none"))
    if est.quant == "none":
        cands.append(("quant int8", cur_dtype, "int8"))
    if est.quant in ("none", "int8"):
        cands.append(("quant int4", cur_dtype, "int4"))
    for label, dt, q in cands:
        static = est.decode.static if est.decode is not None else None
        if estimate(model_dir, dtype=dt, quant=q, device=est.device, load_vision=load_vision, avail=avail,
                    static=static).total_bytes <= avail:
            out.append(label)
    return out


def check_fits(model_dir: str | Path, est: Estimate, avail: int | None, source: str, *,
               load_vision: bool = True) -> None:
    """Raise :class:`MemoryTooSmall` (naming what would fit) when ``est`` exceeds ``avail``."""
    if avail is None or est.total_bytes <= avail:
        return
    opts = advice(model_dir, est, avail, load_vision=load_vision)
    what = f"{est.dtype}" + (f", quant {est.quant}" if est.quant != "none" else "")
    msg = (f"the model needs {gb(est.total_bytes)} on {est.device} ({what}), {gb(avail)} free ({source})")
    if opts:
        wanted = "use " + " or ".join(opts)
    else:
        wanted = "free memory, raise memory_budget, or use a device with more memory (even quant int4 does not fit)"
    err = MemoryTooSmall(f"{msg}: {wanted}", field="memory", wanted=wanted)
    err.estimate, err.available, err.source = est, avail, source  # for the daemon's status
    raise err
