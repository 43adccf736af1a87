"""The audio generation loop (spec section 6): delay pattern, CFG, sampling, EOS countdown, revert.

Reference behaviour, kept exactly (greedy runs reproduce the reference codes bit for bit):

* a delay grid ``G[t, c]`` per item; row 0 is all BOS; codebook c is BOS while ``t <= D[c]``; the
  model's prediction for such cells is discarded;
* step s feeds row s-1 (the sum of its 12 codebook embeddings) and predicts row s;
* CFG on [uncond, cond] row pairs: ``cond + s*(cond - uncond)``; EOS allowed (codebook 0 only) once
  ``min`` frames exist; the EOS *logit* is multiplied by ``eos_factor`` (D6);
* sampling per codebook in fp32: temperature, EOS only when it is the argmax (D7), top-k, top-p
  (nucleus with the crossing token kept), one multinomial; greedy = argmax;
* when codebook 0 emits EOS (or the max length is reached) an 18-step countdown writes EOS/PAD
  following the delays; the output is ``out[f, c] = G[1 + D[c] + f, c]`` for ``f < finished - 1``.

Improvements over the reference:

* one ``torch.Generator`` per request: a seeded request gives the same codes whatever else is in
  the batch (greedy draws no random numbers);
* requests with different prompt lengths, lengths limits and sampling settings share a batch;
* finished (or cancelled) items leave the batch at once, and new items may join it between steps
  (:class:`DecodeSession`: continuous batching; model/scheduler.py runs whole requests on it);
* decode steps of static shapes on CUDA (model/decode_rows.py, decoder.StaticDecoder): row buckets,
  a KV cache preallocated per (rows, slots) bucket, one CUDA graph per bucket captured once and
  reused, finished rows masked; the eager forward stays the fallback and the CPU default;
* items with ``cfg_scale == 0`` run only their conditional row (D8);
* a per-step callback per item, for progress and cancellation;
* continuation: an item may start from ``prefix`` frames (already generated codes), which are fed
  through the delay grid as known cells, and generation continues after them.

The model is reached through a small backend (:class:`LMBackend`) so this file does not depend on
the decoder's internals; :func:`backend_for` builds the one for model-core's decoder.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from .errors import Cancelled
from .prompts import CODEC_BOS, CODEC_EOS, CODEC_PAD, DELAY_PATTERN, Prompt, PromptRow

NEG_INF = float("-inf")


# --- sampling ------------------------------------------------------------------------------------------

@dataclass
class Sampling:
    """Resolved decoding settings of one item (no ``None``)."""

    cfg_scale: float = 10.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 45
    eos_factor: float = 0.6
    greedy: bool = False

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0.0


def guide(uncond: torch.Tensor | None, cond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance on fp32 logits [C, V]."""
    if cfg_scale == 0 or uncond is None:
        return cond.clone()
    return cond + cfg_scale * (cond - uncond)


def mask_logits(logits: torch.Tensor, enable_eos: bool, eos_factor: float, eos: int = CODEC_EOS) -> torch.Tensor:
    """Legal-token masks and the EOS logit factor, in place on [C, V] (reference order)."""
    if enable_eos:
        logits[:, eos + 1:] = NEG_INF
        logits[1:, eos:] = NEG_INF
        logits[0, eos] *= eos_factor
    else:
        # The reference multiplies the -inf EOS logit too; with factor 0 that gives NaN (D6). Skip it.
        logits[:, eos:] = NEG_INF
    return logits


def sample_codes(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None,
                 eos: int = CODEC_EOS) -> torch.Tensor:
    """Pick one code per codebook from fp32 logits [C, V] (spec 6.3 step 6)."""
    if s.is_greedy:
        return torch.argmax(logits, dim=-1)
    x = logits / s.temperature
    top = torch.argmax(x, dim=-1)
    not_eos = top != eos
    if bool(not_eos.any()):
        x[not_eos, eos] = NEG_INF
    k = min(int(s.top_k), x.shape[-1])
    _, keep = torch.topk(x, k=k, dim=-1)
    drop = torch.ones_like(x, dtype=torch.bool).scatter(-1, keep, False)
    x = x.masked_fill(drop, NEG_INF)
    if s.top_p < 1.0:
        probs = torch.softmax(x, dim=-1)
        sp, si = torch.sort(probs, dim=-1, descending=True)
        cum = torch.cumsum(sp, dim=-1)
        rm = torch.roll(cum > s.top_p, shifts=1, dims=-1)
        rm[..., 0] = False
        x = x.masked_fill(torch.zeros_like(rm).scatter(-1, si, rm), NEG_INF)
    probs = torch.softmax(x, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --- delay grid ----------------------------------------------------------------------------------------

def revert_delay(grid: np.ndarray, n_frames: int, delays: Sequence[int] = DELAY_PATTERN) -> np.ndarray:
    """Delayed grid [rows, C] (row 0 = BOS) -> codes [n_frames, C]: ``out[f, c] = G[1 + D[c] + f, c]``."""
    out = np.empty((n_frames, len(delays)), dtype=np.int64)
    for c, d in enumerate(delays):
        out[:, c] = grid[1 + d: 1 + d + n_frames, c]
    return out


def apply_delay(codes: np.ndarray, delays: Sequence[int] = DELAY_PATTERN, rows: int | None = None) -> np.ndarray:
    """Codes [T, C] -> a delay grid with row 0 = BOS, BOS while t <= D[c], codes after, -1 elsewhere."""
    t = codes.shape[0]
    m = max(delays)
    rows = t + m + 1 if rows is None else rows
    g = np.full((rows, len(delays)), -1, dtype=np.int64)
    for c, d in enumerate(delays):
        g[: min(rows, d + 1), c] = CODEC_BOS
        n = max(0, min(t, rows - d - 1))
        g[d + 1: d + 1 + n, c] = codes[:n, c]
    return g


# --- requests and results ------------------------------------------------------------------------------

StepCallback = Callable[[int, int], "bool | None"]  # (new frames so far, max new frames) -> False to stop


@dataclass
class GenItem:
    prompt: Prompt
    sampling: Sampling
    max_frames: int  # new frames at most
    min_frames: int = 0  # new frames at least (EOS disabled before)
    seed: int | None = None
    prefix: np.ndarray | None = None  # [P, C] frames generated before (continuation)
    callback: StepCallback | None = None
    # Streaming previews: called after steps with every complete frame so far ([n, C], prefix included).
    on_codes: Callable[[np.ndarray], None] | None = None


@dataclass
class GenResult:
    codes: np.ndarray  # [n, C] reverted codes, prefix included (first ``n_prefix`` rows)
    n_prefix: int
    grid: np.ndarray  # delayed grid rows 0 .. finished + max_delay - 1 (row 0 = BOS)
    length: int  # n = finished - 1
    seed: int
    steps: int  # decode steps run for this item
    stopped_by_eos: bool

    @property
    def new_codes(self) -> np.ndarray:
        return self.codes[self.n_prefix:]


# --- backend -------------------------------------------------------------------------------------------

class LMBackend(Protocol):
    """What generation needs from the language model."""

    hidden_size: int
    device: torch.device
    dtype: torch.dtype

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor: ...  # [L] -> [L, H]

    def embed_codec(self, codes: torch.Tensor) -> torch.Tensor: ...  # [..., C] -> [..., H]

    def video_features(self, video: Any) -> torch.Tensor: ...  # VideoInput -> [n_tokens, H]

    def positions(self, ids: torch.Tensor, video: Any) -> torch.Tensor: ...  # [L] -> [3, L]

    def prefill(self, embeds: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor,
                extra: int) -> tuple[torch.Tensor, Any]: ...  # [N, L, H] right-aligned -> (logits [N, C, V], cache)

    def step(self, cache: Any, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor: ...  # [N,1,H]

    def keep_rows(self, cache: Any, rows: torch.Tensor) -> Any: ...

    def join_caches(self, caches: Sequence[Any], capacity: int) -> Any: ...  # rows of several, right-aligned


# --- the loop ------------------------------------------------------------------------------------------

@dataclass
class _State:
    item: GenItem
    index: int
    gen: torch.Generator | None
    seed: int
    grid: np.ndarray  # [rows_max, C], -1 = unknown
    n_prefix: int
    s: int  # row written by the next step
    rows: list[int] = field(default_factory=list)  # batch rows of this item: [uncond?, cond]
    next_pos: torch.Tensor | None = None  # [3] position of the next input token
    countdown: int = -1
    finished: int = -1
    steps: int = 0
    eos_by_model: bool = False
    done: bool = False
    error: BaseException | None = None


def new_seed() -> int:
    return random.SystemRandom().randrange(0, 2**63 - 1)


def _row_embeds(lm: LMBackend, row: PromptRow, placeholder_id: int, video_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(row.ids, dtype=torch.long, device=lm.device)
    emb = lm.embed_tokens(ids)
    if row.codec_frames is not None:
        sel = ids == placeholder_id
        frames = torch.as_tensor(np.asarray(row.codec_frames), dtype=torch.long, device=lm.device)
        if int(sel.sum()) != frames.shape[0]:
            raise ValueError(f"{int(sel.sum())} placeholders for {frames.shape[0]} codec frames")
        emb = emb.clone()
        emb[sel] = lm.embed_codec(frames).to(emb.dtype)
    if row.video is not None:
        sel = ids == video_token_id
        feats = getattr(row.video, "features", None)
        if feats is None:
            feats = lm.video_features(row.video)
            try:
                row.video.features = feats  # the uncond/cond rows and later windows share one video
            except AttributeError:
                pass
        if int(sel.sum()) != feats.shape[0]:
            raise ValueError(f"{int(sel.sum())} video tokens for {feats.shape[0]} video features")
        emb = emb.clone()
        emb[sel] = feats.to(emb.dtype)
    pos = lm.positions(ids, row.video if row.video is not None else None)
    return emb, pos


def default_static(lm: Any) -> bool:
    """Static-shape (bucketed, graph-captured) decode by default on CUDA only. On the CPU the eager
    path is faster (bench/bench_speed.py measures both: the static step attends over a whole length
    bucket and runs every expert on every row, which a GPU hides and a CPU pays for)."""
    return getattr(lm, "device", torch.device("cpu")).type == "cuda" and hasattr(lm, "static_decoder")


class DecodeSession:
    """A continuous batch of generation items: items join at a step boundary (:meth:`add`: their
    prefill, then their rows in the shared cache), every :meth:`step` advances all of them by one
    frame, and an item leaves as soon as it is done (EOS countdown over, cancelled by its callback).

    An item's codes do not depend on the others in the batch: each has its own rows, positions,
    sampling settings and ``torch.Generator``; rows never mix. ``static``: the bucketed
    static-shape step (:class:`~.decode_rows.StaticRows`, CUDA graphs on CUDA), or the eager
    forward (:class:`~.decode_rows.EagerRows`); None: :func:`default_static`.

    ``max_rows`` (None: no cap) caps the decode rows in flight (a CFG item takes two): items past it
    wait in :attr:`waiting` and join (their prefill, then their rows) at the first step with room,
    in the order they were added. So many sentence chunks of one speech run in turns, within the
    buckets that memory was planned for (memory.plan_decode).

    Not thread-safe: one caller adds and steps.
    """

    def __init__(self, lm: LMBackend, *, placeholder_id: int, video_token_id: int = -1,
                 delays: Sequence[int] = DELAY_PATTERN, static: bool | None = None, max_rows: int | None = None):
        from .decode_rows import EagerRows, StaticRows

        self.lm = lm
        self.placeholder_id = placeholder_id
        self.video_token_id = video_token_id
        self.delays = list(delays)
        self.m = max(self.delays)
        self.C = len(self.delays)
        self._delay_t = torch.tensor(self.delays)
        self.static = default_static(lm) if static is None else bool(static)
        self.rows: Any = StaticRows(lm) if self.static else EagerRows(lm)
        self.active: list[_State] = []
        self.waiting: list[_State] = []  # added, not yet prefilled: no rows free under max_rows
        self.max_rows = max_rows
        self._row_next: dict[int, int] = {}  # row id -> position of its next token
        self.steps = 0  # decode steps run

    def __len__(self) -> int:
        return len(self.active)

    @property
    def n_rows(self) -> int:
        return sum(len(st.rows) for st in self.active)

    def close(self) -> None:
        """Drop every item still in flight (the caller gave up on them) and free the rows."""
        self.active = []
        self.waiting = []
        self._row_next.clear()
        self.rows.close()

    # -- joining ------------------------------------------------------------------------------------
    def _new_state(self, i: int, it: GenItem) -> _State:
        if it.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        seed = new_seed() if it.seed is None else int(it.seed)
        gen = None
        if not it.sampling.is_greedy:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(seed % (2**63))
        prefix = (np.zeros((0, self.C), dtype=np.int64) if it.prefix is None
                  else np.asarray(it.prefix, dtype=np.int64))
        p = prefix.shape[0]
        grid = apply_delay(prefix, self.delays, rows=p + it.max_frames + self.m + 2)
        return _State(item=it, index=i, gen=gen, seed=seed, grid=grid, n_prefix=p, s=p + 1)

    def add(self, items: Sequence[GenItem]) -> list[_State]:
        """Prefill ``items`` (one forward for all of them) and join them to the batch; those past
        ``max_rows`` wait for a later step. Returns one handle per item, for :meth:`result`. Raises
        (before touching the batch) on a bad item."""
        states = [self._new_state(i, it) for i, it in enumerate(items)]
        if not states:
            return []
        now = self._fitting(states) if not self.waiting else []
        later = states[len(now):]
        self.waiting.extend(later)
        if now:
            try:
                self._prefill(now)
            except BaseException:
                self.waiting = [st for st in self.waiting if not any(st is x for x in later)]
                raise
        return states

    @staticmethod
    def _n_rows(st: _State) -> int:
        return 1 if st.item.sampling.cfg_scale == 0 else 2

    def _fitting(self, states: Sequence[_State]) -> list[_State]:
        """The leading ``states`` whose rows fit under ``max_rows`` (at least one when idle)."""
        if self.max_rows is None:
            return list(states)
        used, out = self.n_rows, []
        for st in states:
            if used + self._n_rows(st) > self.max_rows and (out or self.active):
                break
            out.append(st)
            used += self._n_rows(st)
        return out

    def _admit(self) -> list[_State]:
        """Prefill the waiting items that fit now; returns those whose prefill failed (done)."""
        now = self._fitting(self.waiting)
        if not now:
            return []
        self.waiting = self.waiting[len(now):]
        try:
            self._prefill(now)
        except Exception as exc:  # noqa: BLE001 - their prefill failed: they fail, the rest go on
            for st in now:
                st.error, st.done = exc, True
            return now
        return []

    def _prefill(self, states: list[_State]) -> None:
        lm = self.lm
        # Prefill: every row right-aligned (left padded) in one forward.
        row_embeds: list[torch.Tensor] = []
        row_pos: list[torch.Tensor] = []
        owner: list[_State] = []
        for st in states:
            pr = st.item.prompt
            rows = [pr.cond] if st.item.sampling.cfg_scale == 0 else [pr.uncond, pr.cond]
            pre = torch.as_tensor(st.grid[: st.n_prefix], dtype=torch.long, device=lm.device)
            for r in rows:
                e, pos = _row_embeds(lm, r, self.placeholder_id, self.video_token_id)
                if st.n_prefix:
                    e = torch.cat([e, lm.embed_codec(pre).to(e.dtype)], dim=0)
                    start = pos.max() + 1
                    extra = start + torch.arange(st.n_prefix, device=pos.device)
                    pos = torch.cat([pos, extra.unsqueeze(0).expand(3, -1)], dim=1)
                owner.append(st)
                row_embeds.append(e)
                row_pos.append(pos)
        lengths = torch.tensor([e.shape[0] for e in row_embeds], dtype=torch.long)
        L = int(lengths.max())
        N = len(row_embeds)
        H = row_embeds[0].shape[-1]
        embeds = torch.zeros((N, L, H), dtype=row_embeds[0].dtype, device=lm.device)
        positions = torch.ones((3, N, L), dtype=torch.long, device=lm.device)
        for r, (e, pos) in enumerate(zip(row_embeds, row_pos)):
            embeds[r, L - e.shape[0]:] = e
            positions[:, r, L - e.shape[0]:] = pos
        max_steps = max(st.item.max_frames + self.m + 1 for st in states)
        # Every row of one item continues at its own max position + 1 (1-D after the prompt).
        extra = 0 if self.static else max_steps + 1  # static rows are copied into a bucket's cache
        _, cache = lm.prefill(embeds, positions, lengths.to(lm.device), extra=extra)
        ids = self.rows.add(cache, max_steps)
        for rid, st, pos in zip(ids, owner, row_pos):
            st.rows.append(rid)
            self._row_next[rid] = int(pos.max()) + 1
        self.active.extend(states)

    # -- stepping -----------------------------------------------------------------------------------
    def step(self) -> list[_State]:
        """One decode step for every item in flight (waiting items join first when rows are free).
        Returns the items that finished in it."""
        failed = self._admit() if self.waiting else []
        if not self.active:
            return failed
        lm = self.lm
        ids: list[int] = []
        inp: list[np.ndarray] = []
        for st in self.active:
            frame = st.grid[st.s - 1]  # row s-1 of the item's grid feeds each of its rows
            for r in st.rows:
                ids.append(r)
                inp.append(frame)
        codes_in = torch.as_tensor(np.stack(inp), dtype=torch.long).to(lm.device).unsqueeze(1)  # [n, 1, C]
        emb = lm.embed_codec(codes_in)
        pos = torch.tensor([self._row_next[r] for r in ids], dtype=torch.long, device=lm.device)
        logits = self.rows.step(ids, emb, pos).float()  # [n, C, V]
        self.steps += 1
        for r in ids:
            self._row_next[r] += 1

        j = 0
        for st in self.active:
            if len(st.rows) == 2:
                lu, lc = logits[j], logits[j + 1]
                j += 2
            else:
                lu, lc = None, logits[j]
                j += 1
            self._advance(st, lu, lc)

        done = [st for st in self.active if st.done]
        if done:
            self.active = [st for st in self.active if not st.done]
            gone = [r for st in done for r in st.rows]
            for r in gone:
                self._row_next.pop(r, None)
            self.rows.remove(gone)
        return failed + done

    def _advance(self, st: _State, lu: torch.Tensor | None, lc: torch.Tensor) -> None:
        it, m = st.item, self.m
        ell = guide(lu, lc, it.sampling.cfg_scale)
        new_before = st.s - 1 - st.n_prefix  # new frames already complete before this row
        mask_logits(ell, enable_eos=new_before >= it.min_frames, eos_factor=it.sampling.eos_factor)
        pred = sample_codes(ell, it.sampling, st.gen).cpu()
        st.steps += 1
        if st.countdown != 0:
            if st.countdown < 0:
                is_eos = int(pred[0]) == CODEC_EOS
                if is_eos or st.s >= st.n_prefix + it.max_frames + 1:
                    st.countdown = m
                    st.finished = st.s
                    st.eos_by_model = is_eos
            if st.countdown > 0:
                k = m - st.countdown
                pred[self._delay_t == k] = CODEC_EOS
                pred[self._delay_t < k] = CODEC_PAD
                st.countdown -= 1
        row = st.grid[st.s]
        known = row >= 0
        st.grid[st.s] = np.where(known, row, pred.numpy())
        st.s += 1
        if st.countdown == 0:
            st.done = True
        cb = it.callback
        if cb is not None and not st.done:
            total = it.max_frames
            # frames whose 12 codebooks are all written
            produced = max(0, st.s - 1 - m - st.n_prefix)
            if st.finished > 0:
                produced = min(produced, st.finished - 1 - st.n_prefix)
            try:
                if cb(min(produced, total), total) is False:
                    raise Cancelled("stopped by the progress callback")
                if it.on_codes is not None and produced > 0:
                    it.on_codes(revert_delay(st.grid[: st.s], st.n_prefix + min(produced, total)))
            except BaseException as exc:  # noqa: BLE001 - handed back per item
                st.error = exc
                st.done = True

    def result(self, st: _State) -> GenResult | BaseException:
        """The result of a finished item (or the exception that stopped it)."""
        if st.error is not None:
            return st.error
        if not st.done:
            raise RuntimeError("the item is still in flight")
        n = st.finished - 1
        return GenResult(codes=revert_delay(st.grid, n, self.delays), n_prefix=st.n_prefix,
                         grid=st.grid[: st.finished + self.m].copy(), length=n, seed=st.seed, steps=st.steps,
                         stopped_by_eos=st.eos_by_model)


def generate(lm: LMBackend, items: Sequence[GenItem], *, placeholder_id: int, video_token_id: int = -1,
             delays: Sequence[int] = DELAY_PATTERN, static: bool | None = None) -> list[GenResult | BaseException]:
    """Run the items as one batch. Returns one GenResult per item, or the exception that stopped it
    (``Cancelled`` from its callback). ``static``: see :class:`DecodeSession`."""
    sess = DecodeSession(lm, placeholder_id=placeholder_id, video_token_id=video_token_id, delays=delays,
                         static=static)
    try:
        states = sess.add(items)
        while sess.active or sess.waiting:
            sess.step()
    finally:
        sess.close()
    return [sess.result(st) for st in states]


class DecoderBackend:
    """:class:`LMBackend` over model-core's ``UniMoEAudioModel`` (decoder.py) and its ``KVCache``."""

    def __init__(self, model: Any):
        self.model = model
        self.config = model.config
        self.device = model.device
        self.dtype = model.dtype
        self.hidden_size = int(model.hidden_size)
        self.has_vision = bool(getattr(model, "has_vision", False))
        raw = getattr(self.config, "raw", {}) or {}
        self.model_id = raw.get("_name_or_path") or raw.get("unimoe_audio_model_id")
        self.is_tiny = bool(raw.get("unimoe_audio_tiny", False))
        # None: the tower's default ("windowed", Qwen2.5-VL's intent); "full" reproduces the reference (D2)
        self.vision_attention: str | None = None

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids.to(self.device))

    def embed_codec(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.embed_codec(codes)

    def video_features(self, video: Any) -> torch.Tensor:
        if not self.has_vision:
            raise RuntimeError("the model was loaded without its vision tower")
        pix = video.pixel_values.to(device=self.device, dtype=self.dtype)
        if self.vision_attention is None:
            return self.model.visual(pix, video.grid_thw)
        return self.model.visual(pix, video.grid_thw, attention=self.vision_attention)

    def positions(self, ids: torch.Tensor, video: Any) -> torch.Tensor:
        if video is None:
            return torch.arange(ids.shape[0], device=self.device).unsqueeze(0).expand(3, -1)
        spg = torch.tensor([float(video.second_per_grid_t)])
        pos, _ = self.model.rope_index(ids.view(1, -1).to(self.device), None, video_grid_thw=video.grid_thw,
                                       second_per_grid_ts=spg)
        return pos[:, 0]

    def prefill(self, embeds: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor,
                extra: int) -> tuple[torch.Tensor, Any]:
        n, L, _ = embeds.shape
        mask = torch.arange(L, device=self.device).unsqueeze(0) >= (L - lengths.to(self.device)).unsqueeze(1)
        cache = self.model.new_cache(n, L + int(extra))
        out = self.model(embeds, positions, attention_mask=mask.long(), cache=cache, logits="last")
        return out.logits[:, -1], cache

    def step(self, cache: Any, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        pos = positions[0] if positions.dim() == 3 else positions
        return self.model(embeds, pos, cache=cache, logits="last").logits[:, -1]

    def keep_rows(self, cache: Any, rows: torch.Tensor) -> Any:
        return cache.keep(rows)

    def join_caches(self, caches: Sequence[Any], capacity: int) -> Any:
        from .kv_cache import KVCache

        return KVCache.concat(caches, capacity)

    def static_decoder(self) -> Any:
        """The model's :class:`~.decoder.StaticDecoder` (one per model: its buckets and graphs are
        reused by every generation)."""
        dec = getattr(self.model, "_static_decoder", None)
        if dec is None:
            from .decoder import StaticDecoder

            dec = StaticDecoder(self.model)
            self.model._static_decoder = dec  # plain attribute (not a submodule: no state_dict entry)
        return dec


def backend_for(model: Any) -> LMBackend:
    """The generation backend of model-core's decoder (``decoder.UniMoEAudioModel``)."""
    return DecoderBackend(model)
