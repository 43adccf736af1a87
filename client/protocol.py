"""The wire schema of unimoe-audio: every message the daemon and its clients exchange, defined once.

Both ends import this module (the daemon imports it from the client package, as Ollama's server imports
its ``api`` package). It is light on purpose: pydantic only, no torch, no numpy, no zmq.

A message is a header plus a content object. The header names the message type (``msg_type``); the
content is the pydantic model registered for that type in :data:`REQUESTS`, :data:`REPLIES` or
:data:`EVENTS`. Framing and signing live in :mod:`unimoe_audio.client.wire`; the human description is
``docs/protocol.md``.

Compatibility rules (protocol 1.x):

- Changes within major version 1 are additive: new optional fields, new message types, new error codes.
- Request contents are strict (``extra="forbid"``): a misspelt field is an error naming that field, not
  silently ignored. Replies and events are tolerant (``extra="ignore"``) so an older client can read a
  newer daemon.
- A client whose major version differs from the daemon's gets ``error{code="version_mismatch"}``.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from fractions import Fraction
from typing import Annotated, Any, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from . import tasks as _tasks
from .spec import (  # noqa: F401 - the shared request parts, re-exported (P.LengthSpec ...)
    MAX_SECONDS, MAX_TEXT_CHARS, LengthSpec, SamplingSpec, StrictModel, TaskSpecBase, check_rate,
)
from .tasks.music import MusicTask  # noqa: F401 - re-exported
from .tasks.speech import SpeechTask  # noqa: F401 - re-exported
from .tasks.video_score import VideoScoreTask  # noqa: F401 - re-exported

PROTOCOL_VERSION = "1.0"
PROTOCOL_MAJOR = 1
#: First frame of every message (after ROUTER identities / the PUB topic).
IDENT = b"unimoe-audio/1"
SIGNATURE_SCHEME = "hmac-sha256"

# Limits the daemon enforces (also documented in docs/protocol.md); a task's own fields carry theirs
# (client/tasks/), the shared length and sampling fields theirs (client/spec.py).
MAX_PRIORITY = 100

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES: tuple[str, ...] = ("done", "failed", "cancelled")
DaemonState = Literal["idle", "loading", "ready", "busy", "error", "unloaded"]

# Error codes (``ErrorReply.code``). New codes may be added within 1.x; treat unknown codes as "error".
ERROR_CODES: dict[str, str] = {
    "bad_message": "the frames could not be parsed (wrong frame count, not JSON, no header fields)",
    "bad_signature": "the HMAC signature is missing or wrong (unsigned or wrongly keyed message)",
    "version_mismatch": "the client speaks another major protocol version",
    "unknown_type": "the msg_type is not a request this daemon knows",
    "invalid_input": "a field has a wrong type or value (see field and wanted)",
    "too_large": "a frame is larger than max_message_bytes",
    "path_not_allowed": "a path lies outside the allowed roots",
    "not_found": "the job, voice, model or file does not exist",
    "busy": "the queue is full (max_queue); retry later",
    "media_error": "an audio or video file could not be decoded",
    "checkpoint_error": "the model files are missing, corrupt or do not match",
    "model_error": "the model failed to load or to run",
    "out_of_memory": "the device ran out of memory",
    "quota_exceeded": "this workstation's uploads on the host are over upload_quota_mb (the message says how much)",
    "disk_full": "the output folder's disk has too little free space (the message names the folder and the space needed)",
    "bad_logits": "the model produced non-finite logits for this job (e.g. a float16 overflow); others go on",
    "device_fault": "the GPU reported an error (CUDA error); the jobs in flight failed, the model is reloaded",
    "cancelled": "the job was cancelled",
    "shutting_down": "the daemon is stopping and accepts no new work",
    "backend_unavailable": "the generation backend (the Ray cluster) cannot be reached",
    "internal": "a bug in the daemon; the message is logged",
    # Raised by the client from ZeroMQ's handshake events (never sent by the daemon: it cannot reply to a
    # peer it refused).
    "not_allowed": "the daemon's CurveZMQ allow list (curve_allow) does not hold this client's public key",
    "curve_required": "the client and the daemon disagree on encryption (CurveZMQ on one side only)",
    "handshake_failed": "the encrypted handshake failed (e.g. the host's server key changed)",
    "key_mismatch": "the connection file's signing key is not the running daemon's (it answered bad_signature)",
}


def new_id() -> str:
    return uuid.uuid4().hex


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


_Strict = StrictModel


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------------------
class Header(_Loose):
    """Field types: docs/protocol.md, "Frames and signing". A received header must carry msg_id, msg_type
    and protocol_version (client/wire.py checks); defaults here serve the sender."""

    msg_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    msg_type: str = Field(min_length=1, max_length=64)
    protocol_version: str = Field(PROTOCOL_VERSION, min_length=1, max_length=16)
    session: str = Field("", max_length=128, description="Client session id (one per client process).")
    date: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc),
                                description="When the message was made: ISO-8601 with a time zone.")
    parent_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="On replies: the msg_id of the request answered.")

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, v: Any) -> Any:
        # pydantic would also take a number (Unix time); the wire says ISO-8601 text.
        if not isinstance(v, (str, datetime)):
            raise ValueError("date must be an ISO-8601 date-time string with a time zone")
        return v


# ---------------------------------------------------------------------------------------------------
# Task specs (what to generate)
# ---------------------------------------------------------------------------------------------------
def _task_names() -> str:
    return ", ".join(_tasks.names())


#: Every registered task's spec (client/tasks/): the ``spec`` of a submit, told apart by its ``task``.
TaskSpec = Annotated[Union[tuple(t.spec for t in _tasks.all_tasks())], Field(discriminator="task")]


class OutputOptions(_Strict):
    """Where and how the finished audio is written. Empty fields take the daemon's settings."""

    folder: str | None = Field(None, description="Folder inside the allowed roots (default: the output folder).")
    name: str | None = Field(
        None, max_length=200, description="File name stem (made unique; no path separators). Default: task-jobid."
    )
    sample_rate: int | None = Field(None, ge=8000, le=192000)
    channels: int | None = Field(None, ge=1, le=2)
    bit_depth: Literal[16, 24, 32] | None = None
    normalize: bool = Field(True, description="Loudness-normalize to loudness_lufs with a true-peak ceiling.")
    loudness_lufs: float | None = Field(None, ge=-70, le=0)
    true_peak_db: float | None = Field(None, ge=-20, le=0)
    fit_length: bool = Field(True, description="Trim/pad to the exact requested length (sample exact).")
    overwrite: bool = Field(False, description="When name.wav is taken: False writes name-2.wav (-3 ...); True "
                            "replaces it (and its sidecar) once the new file is complete, unless another job "
                            "is still writing it.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip() or "/" in v or "\\" in v or "\x00" in v or v.strip(".") == "":
            raise ValueError("wanted a plain file name without path separators")
        return v


class SpotInfo(_Strict):
    """Where the file sits on a timeline, and production notes: written into the WAV as a BWF ``bext``
    time reference and an iXML chunk, so an NLE or DAW can spot it to its record-in."""

    record_in: str | None = Field(None, max_length=32, description="Record-in timecode, HH:MM:SS:FF (HH:MM:SS;FF "
                                  "drop-frame); needs fps.")
    fps: str | float | None = Field(None, description="Timecode rate of record_in, e.g. 25, 24000/1001, 29.97.")
    drop: bool | None = Field(None, description="Drop-frame record_in (default: from its separator).")
    seconds: float | None = Field(None, ge=0, lt=86400, description="Or the position as seconds since midnight.")
    project: str | None = Field(None, max_length=200)
    scene: str | None = Field(None, max_length=200)
    take: str | None = Field(None, max_length=200)
    note: str | None = Field(None, max_length=2000)

    _fps = field_validator("fps")(classmethod(lambda cls, v: check_rate(v)))

    @model_validator(mode="after")
    def _position(self) -> "SpotInfo":
        from .timecode import parse_timecode

        if self.record_in is not None and self.seconds is not None:
            raise ValueError("give record_in or seconds, not both")
        if (self.record_in is None) != (self.fps is None) and self.seconds is None:
            raise ValueError("record_in and fps go together")
        if self.record_in is not None:
            n = parse_timecode(self.record_in, self.fps, self.drop)  # ValueError says what is wrong
            if n < 0:
                raise ValueError("record_in before midnight")
        return self

    def start_seconds(self) -> Fraction | None:
        """Seconds since midnight of the position, exact (None when no position is given)."""
        from .timecode import timecode_seconds

        if self.record_in is not None and self.fps is not None:
            return timecode_seconds(self.record_in, self.fps, self.drop)
        if self.seconds is not None:
            return Fraction(self.seconds)
        return None


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------
class PingRequest(_Strict):
    echo: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="When given, the daemon also publishes an `echo` event on topic `echo.<echo>` after the reply: "
                    "a subscriber that receives it knows its subscriptions have reached the daemon's publisher.")


class SubmitRequest(_Strict):
    spec: TaskSpec
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first; FIFO within one priority.")
    output: OutputOptions = Field(default_factory=OutputOptions)
    stream_partial: bool = Field(False, description="Publish 'partial' events with a path to the audio so far.")
    tag: str | None = Field(None, max_length=200, description="Free text echoed in the job (caller's own id).")
    request_id: str | None = Field(
        None, min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Idempotency key: a submit repeating a request_id seen within the daemon's window "
        "(IDEMPOTENCY_WINDOW_S) gets the first job back instead of a new one. Clients send a fresh one per "
        "render and the same one when they retry it.")
    spot: SpotInfo | None = Field(None, description="Timeline position and notes written into the WAV (BWF bext, "
                                  "iXML).")


#: How long the daemon remembers a submit's request_id (seconds).
IDEMPOTENCY_WINDOW_S = 24 * 3600.0


class StatusRequest(_Strict):
    pass


class JobsRequest(_Strict):
    states: list[JobState] | None = Field(None, description="Only jobs in these states (default: all).")
    task: str | None = None

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | None) -> str | None:
        if v is not None and _tasks.find(v) is None:
            raise ValueError(f"unknown task {v!r} (wanted one of {_task_names()})")
        return None if v is None else _tasks.get(v).name
    limit: int = Field(100, ge=1, le=10_000)
    newest_first: bool = True


class JobRequest(_Strict):
    job_id: str = Field(min_length=1, max_length=64)


class SnapshotRequest(_Strict):
    job_id: str = Field(min_length=1, max_length=64)


class CancelRequest(_Strict):
    job_id: str = Field(min_length=1, max_length=64)


class VoicesRequest(_Strict):
    action: Literal["list", "add", "remove"] = "list"
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
    audio_path: str | None = Field(None, description="add: reference recording (inside the allowed roots).")
    transcript: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="add: what the recording says.")

    @model_validator(mode="after")
    def _need(self) -> "VoicesRequest":
        if self.action in ("add", "remove") and not self.name:
            raise ValueError(f"{self.action} needs name")
        if self.action == "add" and (not self.audio_path or not self.transcript):
            raise ValueError("add needs audio_path and transcript")
        return self


class ModelsRequest(_Strict):
    pass


class UnloadRequest(_Strict):
    pass


class ShutdownRequest(_Strict):
    requeue_running: bool = Field(
        True, description="Stop the running job now and run it again at next start (False: finish it first)."
    )


#: Largest chunk one ``fetch`` reply carries (its bytes travel in one extra frame after the content).
FETCH_CHUNK_MAX = 8 << 20


class FetchRequest(_Strict):
    """A chunk of a file a job wrote: its audio (``result``), its sidecar JSON, or its latest partial preview.

    Only files the daemon wrote for that job are served, never an arbitrary path, so a workstation that
    shares no folder with the host still gets its audio."""

    job_id: str = Field(min_length=1, max_length=128)
    part: Literal["result", "sidecar", "partial"] = "result"
    name: str | None = Field(None, max_length=64, pattern=r"^partial-[0-9]{4,}\.wav$",
                             description="For part 'partial': the preview's file name (from its event's path); "
                             "default the newest.")
    offset: int = Field(0, ge=0)
    size: int = Field(1 << 20, ge=1, le=FETCH_CHUNK_MAX, description="Most bytes wanted in this reply.")


#: Largest chunk one ``upload`` request carries (also bounded by the daemon's max_message_bytes).
UPLOAD_CHUNK_MAX = 8 << 20
#: How an uploaded file is named in a path field (reference_audio, video, audio_path): its content hash.
MEDIA_REF_PREFIX = "sha256:"
def input_media_fields(msg_type: str) -> tuple[str, ...]:
    """Request fields that name input media (a path on the daemon's machine, or an upload's ref), dotted:
    each registered task's ``input_files`` under ``spec`` for a submit (plug-in tasks included), and the
    recording of ``voices add``."""
    if msg_type == "submit":
        return tuple(f"spec.{f}" for f in _tasks.input_fields())
    if msg_type == "voices":
        return ("audio_path",)
    return ()


def is_media_ref(value: str | None) -> bool:
    return bool(value) and value.startswith(MEDIA_REF_PREFIX) and len(value) == len(MEDIA_REF_PREFIX) + 64 and all(
        c in "0123456789abcdef" for c in value[len(MEDIA_REF_PREFIX):])


class UploadRequest(_Strict):
    """One chunk of a media file a workstation sends to a remote daemon (the chunk is a raw frame after
    the content). Content-addressed: a file the host already has is answered ``complete`` at once; a
    chunk at the wrong offset is answered with the offset the host holds (resume from there)."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The whole file's SHA-256 (hex).")
    size: int = Field(ge=0, description="The whole file's size in bytes.")
    offset: int = Field(0, ge=0, description="Where this chunk goes; no chunk: ask how much the host holds.")
    name: str = Field("", max_length=255, description="The file's name on the workstation (for logs and errors).")


class UploadReply(_Loose):
    sha256: str
    size: int
    received: int = Field(description="Bytes the host holds; send the next chunk from here.")
    complete: bool = False
    ref: str = Field("", description="When complete: the value to put in a path field (sha256:<hex>).")


# ---------------------------------------------------------------------------------------------------
# Replies and shared records
# ---------------------------------------------------------------------------------------------------
class ErrorReply(_Loose):
    code: str = "internal"
    message: str = ""
    field: str | None = None
    wanted: str | None = None


class ResultFields(_Loose):
    """A finished job's file and its format: one definition for :class:`JobResult` (a job's record),
    the ``done`` event and the client's ``GenerationResult``."""

    path: str
    sidecar: str
    seconds: float
    sample_rate: int
    channels: int
    bit_depth: int = 24
    seed: int
    loudness_lufs: float | None = None

    def result_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ResultFields.model_fields}


class JobResult(ResultFields):
    pass


class JobInfo(_Loose):
    job_id: str
    task: str
    state: JobState
    priority: int = 0
    tag: str | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    position: int | None = Field(None, description="Queued jobs: 0 runs next.")
    eta_s: float | None = Field(None, description="Seconds until done, from recent throughput.")
    fraction: float = 0.0
    stage: str | None = None
    result: JobResult | None = None
    error: ErrorReply | None = None
    request: dict[str, Any] | None = Field(None, description="The SubmitRequest as received.")


class PingReply(_Loose):
    protocol_version: str = PROTOCOL_VERSION
    version: str = ""
    pid: int = 0
    time: float = 0.0


class SubmitReply(_Loose):
    job_id: str
    state: JobState = "queued"
    position: int = 0
    eta_s: float | None = None
    repeat: bool = Field(False, description="True when request_id matched an earlier submit: job_id is that "
                         "job's, state its current state, and no new job was made.")


class MemoryInfo(_Loose):
    rss_bytes: int | None = None
    device_allocated_bytes: int | None = None
    device_total_bytes: int | None = None
    estimate_bytes: int | None = Field(None, description="What the loaded (or last tried) model was estimated to need.")
    available_bytes: int | None = Field(None, description="What the device had for it at load time.")
    available_source: str | None = None
    peak_bytes: int | None = Field(None, description="Measured peak since the model loaded (see peak_source).")
    peak_source: str | None = Field(None, description="cuda max_memory_allocated, or on the CPU the process peak RSS (sampled every 0.1 s; anonymous memory while loading, so the weight files read are not counted).")
    max_rows: int | None = Field(None, description="Decode rows in flight at most (a CFG item takes 2); more wait.")
    batch_invariant: bool | None = Field(None, description="Decode steps are batch-invariant (the batch_invariant "
                                         "setting): a seeded take does not depend on the jobs sharing its batch.")
    buckets: int | None = Field(None, description="Static decode buckets (captured graphs) held now.")
    bucket_bytes: int | None = Field(None, description="What those buckets keep (KV cache, inputs, graph outputs).")
    bucket_budget_bytes: int | None = Field(None, description="Buckets past this are released, least recently used first.")
    bucket_evictions: int | None = Field(None, description="Buckets released under memory pressure so far.")


class ActorInfo(_Loose):
    """One engine actor of the Ray backend."""

    name: str
    state: str = Field("starting", description="starting | loading | ready | busy | restarting | gone")
    node: str | None = Field(None, description="Ray node id (first 12 hex digits) the actor runs on.")
    host: str | None = None
    pid: int | None = None
    device: str | None = None
    dtype: str | None = None
    quant: str | None = None
    model_id: str | None = Field(None, description="The model the actor serves (its folder's name on its node).")
    model_hash: str | None = None
    tiny: bool | None = Field(None, description="True when the actor serves random weights (noise).")
    running: list[str] = Field(default_factory=list, description="Ids of the jobs the actor is generating now.")
    jobs_done: int = 0
    restarts: int = 0


class BackendInfo(_Loose):
    """Where generation runs (``status.backend``)."""

    kind: Literal["local", "ray"] = "local"
    state: str = Field("ready", description="local: always ready; ray: connecting | ready | waiting (connected, "
                       "no engine actor alive: jobs wait for capacity) | unavailable")
    address: str | None = None
    error: ErrorReply | None = None
    actors: list[ActorInfo] = Field(default_factory=list)
    wanted: int = Field(0, description="ray: engine actors the cluster's nodes call for now (ray_actors caps it).")
    auth: bool | None = Field(None, description="ray: whether the connection uses Ray's token authentication.")
    warnings: list[str] = Field(default_factory=list, description="ray: what the operator should know (no token "
                                "authentication; actors serving different models).")


class StatusReply(_Loose):
    state: DaemonState
    model: str = Field("", description="Model name or path as configured.")
    model_dir: str | None = None
    model_hash: str | None = None
    tiny: bool = Field(False, description="True when the tiny random model (noise) is serving.")
    tiny_reason: str | None = None
    tiny_builtin: bool = Field(False, description="Tiny because no real model is installed (the built-in model); "
                               "False with tiny=True: a random-weight folder (make-tiny) serves from model_dir.")
    device: str | None = None
    dtype: str | None = None
    quant: str | None = Field(None, description="Weight quantization of the loaded model: none, int8 or int4.")
    memory: MemoryInfo = Field(default_factory=MemoryInfo)
    kernels: dict[str, Any] | None = Field(None, description=(
        "Kernels chosen at load on the real shapes: linears {class: {kernel: count}}, experts_decode "
        "(grouped | chosen | all), experts_decode_invariant (the same in batch-invariant steps, the default: "
        "chosen only where its grouped matmul was measured invariant), fallbacks (linears on the slower dequant path) and fallback_reasons."))
    queue_length: int = 0
    running: list[str] = Field(default_factory=list)
    error: ErrorReply | None = None
    keep_alive: float = 0.0
    uptime_s: float = 0.0
    protocol_version: str = PROTOCOL_VERSION
    version: str = ""
    pid: int = 0
    output_dir: str = ""
    osc_port: int | None = None
    backend: BackendInfo = Field(default_factory=BackendInfo)
    warnings: list[str] = Field(default_factory=list, description="Problems met at start and worked around, "
                                "e.g. a corrupt queue database moved aside (where it went).")
    faults: int = Field(0, description="GPU errors (CUDA faults) since the daemon started; each failed the jobs "
                        "in flight, and the model was reloaded before the next job.")
    last_fault: ErrorReply | None = Field(None, description="The latest of them (code device_fault).")


class JobsReply(_Loose):
    jobs: list[JobInfo] = Field(default_factory=list)


class JobReply(_Loose):
    job: JobInfo


class SnapshotReply(_Loose):
    job: JobInfo
    last_event: dict[str, Any] | None = Field(None, description="The job's latest event content (any type).")
    seq: int = Field(0, description="seq of the latest event published for this job.")


class CancelReply(_Loose):
    job_id: str
    state: JobState = Field(description="State after the request: 'cancelled', or a final state it already had.")
    was: JobState | None = None
    pending: bool = Field(False, description="True for a running job: it stops at its next step; a 'cancelled' "
                          "event follows.")


class FetchReply(_Loose):
    """One chunk: ``length`` bytes from ``offset`` in the frame after the content. ``total_size`` and
    ``sha256`` describe the whole file, so the client checks what it assembled before it renames it."""

    job_id: str
    part: str = "result"
    name: str = Field(description="The file's name on the host (no folder).")
    total_size: int
    sha256: str
    offset: int
    length: int
    seconds: float | None = None


class VoiceInfo(_Loose):
    name: str
    transcript: str = ""
    frames: int = 0
    seconds: float = 0.0
    created: float = 0.0
    source: str | None = None


class VoicesReply(_Loose):
    voices: list[VoiceInfo] = Field(default_factory=list)


class ModelInfo(_Loose):
    name: str
    path: str
    tiny: bool = False
    active: bool = False
    loaded: bool = False


class ModelsReply(_Loose):
    models: list[ModelInfo] = Field(default_factory=list)


class UnloadReply(_Loose):
    state: DaemonState


class ShutdownReply(_Loose):
    ok: bool = True


# ---------------------------------------------------------------------------------------------------
# Events (PUB). Topic frame: "job.<job_id>" or "daemon". Every job event carries job_id and seq
# (1, 2, 3 ... per job, so a subscriber can check order and notice gaps).
# ---------------------------------------------------------------------------------------------------
class _JobEvent(_Loose):
    job_id: str
    seq: int = 0
    tag: str | None = None


class AcceptedEvent(_JobEvent):
    task: str = ""
    position: int = 0
    eta_s: float | None = None


class StartedEvent(_JobEvent):
    attempt: int = 1
    batch_size: int = 1


class ProgressEvent(_JobEvent):
    fraction: float
    stage: str
    frames: int = 0
    frames_total: int = 0
    eta_s: float | None = None


class PartialEvent(_JobEvent):
    path: str
    seconds: float = 0.0


class DoneEvent(_JobEvent, ResultFields):
    task: str = Field("", description="The job's task (so a follower needs no request to learn it).")


class FailedEvent(_JobEvent):
    error: ErrorReply


class CancelledEvent(_JobEvent):
    pass


class RequeuedEvent(_JobEvent):
    reason: str = ""


class DaemonEvent(_Loose):
    """Topic "daemon": state changes (loading, ready, error, unloaded ...) and shutdown."""

    state: DaemonState | Literal["stopping"]
    model: str = ""
    tiny: bool = False
    error: ErrorReply | None = None
    queue_length: int = 0


class EchoEvent(_Loose):
    """Topic ``echo.<token>``: the answer to ``ping{echo: token}`` on the event socket (the subscription
    handshake, :meth:`~.channel.Subscription.confirm`)."""

    echo: str


REQUESTS: dict[str, type[BaseModel]] = {
    "ping": PingRequest,
    "submit": SubmitRequest,
    "status": StatusRequest,
    "jobs": JobsRequest,
    "job": JobRequest,
    "snapshot": SnapshotRequest,
    "cancel": CancelRequest,
    "voices": VoicesRequest,
    "models": ModelsRequest,
    "unload": UnloadRequest,
    "shutdown": ShutdownRequest,
    "fetch": FetchRequest,
    "upload": UploadRequest,
}
#: Requests the control socket answers (it stays responsive when the request socket is flooded).
CONTROL_REQUESTS: frozenset[str] = frozenset({"ping", "status", "cancel", "shutdown", "unload"})

REPLIES: dict[str, type[BaseModel]] = {
    "ping_reply": PingReply,
    "submit_reply": SubmitReply,
    "status_reply": StatusReply,
    "jobs_reply": JobsReply,
    "job_reply": JobReply,
    "snapshot_reply": SnapshotReply,
    "cancel_reply": CancelReply,
    "voices_reply": VoicesReply,
    "models_reply": ModelsReply,
    "unload_reply": UnloadReply,
    "shutdown_reply": ShutdownReply,
    "fetch_reply": FetchReply,
    "upload_reply": UploadReply,
    "error": ErrorReply,
}

EVENTS: dict[str, type[BaseModel]] = {
    "accepted": AcceptedEvent,
    "started": StartedEvent,
    "progress": ProgressEvent,
    "partial": PartialEvent,
    "done": DoneEvent,
    "failed": FailedEvent,
    "cancelled": CancelledEvent,
    "requeued": RequeuedEvent,
    "daemon": DaemonEvent,
    "echo": EchoEvent,
}
FINAL_EVENTS: frozenset[str] = frozenset({"done", "failed", "cancelled"})


def reply_type(request_type: str) -> str:
    return f"{request_type}_reply"


def job_topic(job_id: str) -> str:
    return f"job.{job_id}"


DAEMON_TOPIC = "daemon"


def echo_topic(token: str) -> str:
    """The topic of the ``echo`` event that answers ``ping{echo: token}``."""
    return f"echo.{token}"


class ProtocolError(Exception):
    """A message that does not fit the schema; carries the ErrorReply fields."""

    def __init__(self, code: str, message: str, field: str | None = None, wanted: str | None = None):
        super().__init__(message if field is None else f"{field}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.wanted = wanted

    def to_reply(self) -> ErrorReply:
        return ErrorReply(code=self.code, message=self.message, field=self.field, wanted=self.wanted)


def _loc(loc: tuple[Any, ...]) -> str | None:
    # Drop discriminator tags pydantic inserts ("spec.music.caption" -> "spec.caption").
    parts = [str(p) for p in loc if p not in _tasks.names()]
    return ".".join(parts) or None


def validation_error(exc: ValidationError) -> ProtocolError:
    """The first problem of a pydantic ValidationError as a typed, field-naming ProtocolError."""
    errs = exc.errors(include_url=False)
    first = errs[0] if errs else {"loc": (), "msg": str(exc), "type": "value_error"}
    field = _loc(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    msg = str(first.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    wanted = None
    ctx = first.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = f"{field}.task" if field else "task"
        msg = "unknown task" if kind == "union_tag_invalid" else "task required"
        wanted = _task_names()
    elif kind == "extra_forbidden":
        msg = "unknown field"
        wanted = "no such field in this message type (see docs/protocol.md)"
    elif kind == "missing":
        msg = "field required"
        wanted = "a value"
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        wanted = kind.replace("_parsing", "").replace("_type", "")
    elif ctx:
        wanted = ", ".join(f"{k} {v}" for k, v in ctx.items() if k != "error")
    else:
        wanted = None
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more problem(s))"
    return ProtocolError("invalid_input", msg, field=field, wanted=wanted or None)


def parse_content(table: dict[str, type[BaseModel]], msg_type: str, content: Any) -> BaseModel:
    """Validate ``content`` as the model registered for ``msg_type`` in ``table``."""
    model = table.get(msg_type)
    if model is None:
        raise ProtocolError("unknown_type", f"unknown message type {msg_type!r}", field="msg_type",
                            wanted=", ".join(sorted(table)))
    if not isinstance(content, dict):
        raise ProtocolError("invalid_input", "content must be a JSON object", field="content", wanted="object")
    try:
        return model.model_validate(content)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_request(msg_type: str, content: Any) -> BaseModel:
    return parse_content(REQUESTS, msg_type, content)


def parse_reply(msg_type: str, content: Any) -> BaseModel:
    return parse_content(REPLIES, msg_type, content)


def parse_event(msg_type: str, content: Any) -> BaseModel:
    return parse_content(EVENTS, msg_type, content)


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as the JSON-ready dict sent on the wire (None fields omitted for brevity)."""
    return model.model_dump(mode="json", exclude_none=True)


def check_version(version: str | None) -> None:
    try:
        major = int(str(version).split(".")[0])
    except (ValueError, AttributeError):
        raise ProtocolError("version_mismatch", f"unreadable protocol_version {version!r}", field="protocol_version",
                            wanted=PROTOCOL_VERSION) from None
    if major != PROTOCOL_MAJOR:
        raise ProtocolError("version_mismatch", f"protocol {version} is not compatible with {PROTOCOL_VERSION}",
                            field="protocol_version", wanted=f"{PROTOCOL_MAJOR}.x")


_TASK_ADAPTER: TypeAdapter[Any] = TypeAdapter(TaskSpec)


def parse_task(data: Any) -> TaskSpecBase:
    try:
        return _TASK_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


