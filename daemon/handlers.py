"""Handlers: one method per request type (``on_<msg_type>``), shared by ZeroMQ (daemon/transport.py)
and OSC (daemon/osc_bridge.py).

A handler gets a typed request (client/protocol.py) and returns ``(reply, after)``: the reply model, and
an optional function run once the reply is sent (e.g. publish ``accepted`` after the ``submit_reply``,
so a client sees its job id before its first event). Requests that need the worker thread (voice
encoding, unloading) return None and the worker answers later through the Outbox.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from ..client import wire
from ..client.settings import Settings
from ..client.protocol import (
    IDEMPOTENCY_WINDOW_S,
    CancelReply,
    CancelRequest,
    JobReply,
    JobRequest,
    JobsReply,
    JobsRequest,
    MemoryInfo,
    ModelInfo,
    ModelsReply,
    PingReply,
    ProtocolError,
    ShutdownReply,
    ShutdownRequest,
    SnapshotReply,
    SnapshotRequest,
    StatusReply,
    SubmitReply,
    SubmitRequest,
    UploadRequest,
    VoicesReply,
    VoicesRequest,
    dump,
    echo_topic,
)
from . import outputs, probe
from .logs import get_logger
from .events import Outbox, Publisher
from .files import FileServer
from .model_host import ModelHost, error_from_exception
from .queue import JobStore, row_to_info
from .uploads import Peer, UploadStore
from .voices import VoiceStore
from .worker import Worker, batch_key

log = get_logger("server")


class DaemonParts(Protocol):
    """What the handlers use of the daemon (daemon/server.py builds them): its parts, not its sockets.
    Declared here so this module does not import the server that imports it."""

    settings: Settings
    version: str
    started: float
    stopping: bool
    roots: list[Path]
    store: JobStore
    host: ModelHost
    worker: Worker
    voices: VoiceStore
    files: FileServer
    uploads: UploadStore
    warnings: list[str]
    outbox: Outbox
    publisher: Publisher
    osc: Any  # osc_server.OscSocket or None

    def request_stop(self, requeue_running: bool = True) -> None: ...


class Handlers:
    def __init__(self, daemon: DaemonParts):
        self.d = daemon

    def dispatch(self, msg_type: str, req: Any, *, deferred: Any = None, osc: Any = None, peer: Peer | None = None,
                 buffers: list[bytes] | None = None) -> tuple[Any, Callable[[], None] | None] | None:
        fn = getattr(self, f"on_{msg_type}")
        peer = peer or Peer()
        # Input media: an upload's sha256 ref becomes its file here; a remote client's path is refused.
        self.d.uploads.resolve_request(peer, msg_type, req)
        return fn(req, deferred=deferred, osc=osc, peer=peer, buffers=buffers or [])

    def state(self) -> str:
        d = self.d
        h = d.host.state
        if h in ("loading", "error"):
            return h
        if d.worker.running or d.store.running_ids():
            return "busy"
        if d.host.engine is not None:
            return "ready"
        return h if h in ("idle", "unloaded") else "idle"

    # -- one per request type ----------------------------------------------------------------------
    def on_upload(self, req: UploadRequest, *, osc: Any = None, peer: Peer, buffers: list[bytes], **_: Any) -> Any:
        if osc is not None:
            raise ProtocolError("unknown_type", "upload is not available over OSC", field="address")
        return self.d.uploads.receive(peer, req, buffers), None

    def on_fetch(self, req: Any, *, osc: Any = None, **_: Any) -> Any:
        from .transport import WithBuffers

        if osc is not None:  # OSC never carries audio (and has no fetch address); guard the handler anyway
            raise ProtocolError("unknown_type", "fetch is not available over OSC", field="address")
        reply, data = self.d.files.chunk(req)
        return WithBuffers(reply, [data]), None

    def on_ping(self, req: Any, **_: Any) -> Any:
        reply = PingReply(version=self.d.version, pid=os.getpid(), time=time.time())
        token = getattr(req, "echo", None)
        if not token:
            return reply, None

        def echo() -> None:  # the subscription handshake: a subscriber of echo.<token> hears this one
            self.d.publisher.publish("echo", {"echo": token}, topic=echo_topic(token))

        return reply, echo

    def on_status(self, req: Any, **_: Any) -> Any:
        d = self.d
        h = d.host
        return StatusReply(
            state=self.state(), model=d.settings.model, model_dir=str(h.model_dir) if h.model_dir else None,
            model_hash=h.model_hash, tiny=h.tiny, tiny_reason=h.tiny_reason, tiny_builtin=h.tiny and h.tiny_builtin,
            device=h.device, dtype=h.dtype, quant=h.quant,
            memory=MemoryInfo(**h.memory()), kernels=h.kernels if h.engine is not None else None,
            queue_length=d.store.queued_count(), running=d.store.running_ids(),
            error=h.error, keep_alive=d.settings.keep_alive, uptime_s=time.time() - d.started,
            version=d.version, pid=os.getpid(), output_dir=str(d.settings.output_path),
            osc_port=d.osc.port if d.osc else None, backend=d.worker.backend_status(),
            warnings=list(d.warnings),
            faults=h.faults, last_fault=h.last_fault,
        ), None

    def check_submit(self, req: SubmitRequest) -> None:
        d = self.d
        outputs.check_input_files(req.spec, d.roots)
        folder = outputs.output_folder(req.output.folder, d.settings.output_path, d.roots)
        # open the inputs now: a bad file is refused, not failed later
        probe.probe_submit(req, folder, d.roots, d.voices)

    def on_submit(self, req: SubmitRequest, *, osc: Any = None, **_: Any) -> Any:
        d = self.d
        if d.stopping:
            raise ProtocolError("shutting_down", "the daemon is stopping; submit again after it restarts")
        if req.request_id is not None:
            first = self.repeat_of(req)
            if first is not None:
                return first, None
        self.check_submit(req)
        job_id = wire.new_id()
        osc_reply = None
        if osc is not None:
            (host, port), tag, progress = osc
            osc_reply = [host, port, tag, progress]
        ok = d.store.add(job_id, req.spec.task, req.priority, dump(req), tag=req.tag, batch_key=batch_key(req),
                         osc_reply=osc_reply, max_queue=d.settings.max_queue, request_id=req.request_id,
                         model=d.settings.model)
        if not ok:
            raise ProtocolError("busy", f"the queue is full ({d.settings.max_queue} jobs waiting)", field="queue",
                                wanted="retry when jobs finish (max_queue)")
        if osc_reply:
            d.publisher.osc_targets[job_id] = (osc_reply[0], int(osc_reply[1]), osc_reply[2], bool(osc_reply[3]))
        position = d.store.position(job_id) or 0
        eta = d.worker.eta(position)
        log.info("job %s queued: %s, priority %d, position %d", job_id, req.spec.task, req.priority, position)

        def after() -> None:
            d.publisher.publish("accepted", {"job_id": job_id, "tag": req.tag, "task": req.spec.task,
                                             "position": position, "eta_s": eta})
            d.worker.wake()

        return SubmitReply(job_id=job_id, state="queued", position=position, eta_s=eta), after

    def repeat_of(self, req: SubmitRequest) -> SubmitReply | None:
        """The first job of a repeated submit (same request_id within the window), or None. The same key
        on a different request is refused: a client bug must not silently get someone else's audio."""
        d = self.d
        row = d.store.by_request_id(req.request_id, since=time.time() - IDEMPOTENCY_WINDOW_S)
        if row is None:
            return None
        if json.loads(row["request"]) != dump(req):
            raise ProtocolError("invalid_input", "this request_id was already used for a different request",
                                field="request_id", wanted="a fresh request_id for each new render")
        info = self.job_info(row, with_request=False)
        log.info("job %s: repeated submit (request_id %s) answered with the first job", row["id"], req.request_id)
        return SubmitReply(job_id=row["id"], state=row["state"], position=info.position or 0, eta_s=info.eta_s,
                           repeat=True)

    def job_info(self, row: dict[str, Any], with_request: bool = True) -> Any:
        d = self.d
        pos = d.store.position(row["id"]) if row["state"] == "queued" else None
        eta = None
        if row["state"] == "queued":
            eta = d.worker.eta(pos)
        elif row["state"] == "running":
            eta = d.worker.eta(-1)
        return row_to_info(row, position=pos, eta_s=eta, with_request=with_request)

    def row(self, job_id: str) -> dict[str, Any]:
        row = self.d.store.row(job_id)
        if row is None:
            raise ProtocolError("not_found", f"no job {job_id!r}", field="job_id", wanted="an id from 'jobs ls'")
        return row

    def on_jobs(self, req: JobsRequest, **_: Any) -> Any:
        rows = self.d.store.list(req.states, req.task, req.limit, req.newest_first)
        return JobsReply(jobs=[self.job_info(r) for r in rows]), None

    def on_job(self, req: JobRequest, **_: Any) -> Any:
        return JobReply(job=self.job_info(self.row(req.job_id))), None

    def on_snapshot(self, req: SnapshotRequest, **_: Any) -> Any:
        row = self.row(req.job_id)
        last = json.loads(row["last_event"]) if row["last_event"] else None
        return SnapshotReply(job=self.job_info(row), last_event=last,
                             seq=self.d.publisher.seq(req.job_id, row["event_seq"])), None

    def on_cancel(self, req: CancelRequest, **_: Any) -> Any:
        d = self.d
        job_id = req.job_id
        if d.store.cancel_queued(job_id):
            log.info("job %s cancelled while queued", job_id)
            return CancelReply(job_id=job_id, state="cancelled", was="queued"), (
                lambda: d.publisher.publish("cancelled", {"job_id": job_id, "tag": d.store.row(job_id)["tag"]}))
        row = self.row(job_id)
        if row["state"] == "running":
            d.worker.cancel(job_id)
            log.info("job %s: cancel requested while running", job_id)
            return CancelReply(job_id=job_id, state="running", was="running", pending=True), None
        return CancelReply(job_id=job_id, state=row["state"], was=row["state"]), None

    def on_voices(self, req: VoicesRequest, *, deferred: Any = None, osc: Any = None, **_: Any) -> Any:
        d = self.d
        if req.action == "list":
            return VoicesReply(voices=d.voices.list()), None
        if req.action == "remove":
            if not d.voices.remove(req.name):
                raise ProtocolError("not_found", f"no saved voice named {req.name!r}", field="name")
            return VoicesReply(voices=d.voices.list()), None
        path = outputs.check_input_file(req.audio_path, d.roots, "audio_path")
        d.voices.check_name(req.name)  # validates the name now
        which, envelope, parent_id = deferred

        def op() -> None:
            try:
                codes = d.worker.encode_voice(path, req.transcript)
                info = d.voices.save(req.name, codes, req.transcript, source=str(path))
                log.info("voice %r saved (%d frames)", req.name, info.frames)
                d.outbox.reply(which, envelope, parent_id, "voices_reply", dump(VoicesReply(voices=[info])))
            except ProtocolError as exc:
                d.outbox.reply(which, envelope, parent_id, "error", dump(exc.to_reply()))
            except Exception as exc:  # noqa: BLE001
                log.exception("voice encoding failed")
                err = getattr(exc, "error", None) or error_from_exception(exc)
                if err.field is None and err.code in ("invalid_input", "media_error"):
                    err.field = "audio_path"
                d.outbox.reply(which, envelope, parent_id, "error", dump(err))

        d.worker.submit_op(op)
        return None

    def on_models(self, req: Any, **_: Any) -> Any:
        from ..client.models_store import list_models

        d = self.d
        out = []
        # The built-in tiny model serves only when no model folder was found (a make-tiny folder served by
        # path is tiny too, but it is that folder that is active).
        builtin_serves = d.host.tiny and d.host.find_real()[0] is None
        for m in list_models(d.settings):
            active = builtin_serves if m.builtin else m.selected
            out.append(ModelInfo(name=m.name, path=m.path, tiny=m.builtin, active=active,
                                 loaded=active and d.host.engine is not None))
        return ModelsReply(models=out), None

    def on_unload(self, req: Any, *, deferred: Any = None, **_: Any) -> Any:
        d = self.d
        which, envelope, parent_id = deferred

        def op() -> None:
            d.host.unload("requested")
            d.outbox.reply(which, envelope, parent_id, "unload_reply", {"state": self.state()})

        d.worker.submit_op(op)
        return None

    def on_shutdown(self, req: ShutdownRequest, **_: Any) -> Any:
        log.info("shutdown requested by a client")
        return ShutdownReply(ok=True), (lambda: self.d.request_stop(req.requeue_running))
