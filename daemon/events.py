"""Events: the worker-to-main-loop hand-off (Outbox) and the publisher that numbers, records and sends
every event on the PUB socket (and to OSC senders that asked for a job's events).

Only the main loop thread calls Publisher; the worker thread only ever talks to an Outbox.
"""
from __future__ import annotations

import json
import pickle
import threading
from typing import Any

import zmq

from ..client import wire
from ..client.protocol import DAEMON_TOPIC, FINAL_EVENTS, ErrorReply, job_topic
from . import osc_server
from .logs import get_logger
from .queue import JobStore

log = get_logger("server")

OUTBOX_ENDPOINT = "inproc://unimoe-outbox"


class Outbox:
    """Thread-safe hand-off from the worker thread to the main loop (one inproc PUSH per thread)."""

    def __init__(self, ctx: zmq.Context):
        self._ctx = ctx
        self._local = threading.local()
        self._all: list[zmq.Socket] = []
        self._lock = threading.Lock()

    def _sock(self) -> zmq.Socket:
        s = getattr(self._local, "sock", None)
        if s is None:
            s = self._ctx.socket(zmq.PUSH)
            s.linger = 1000
            s.connect(OUTBOX_ENDPOINT)
            self._local.sock = s
            with self._lock:
                self._all.append(s)
        return s

    def _put(self, item: tuple[Any, ...]) -> None:
        self._sock().send(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def event(self, etype: str, content: dict[str, Any]) -> None:
        self._put(("event", etype, content))

    def state(self, state: str, error: ErrorReply | None) -> None:
        self._put(("state", state, None if error is None else error.model_dump()))

    def reply(self, which: str, envelope: list[bytes], parent_id: str, msg_type: str, content: dict[str, Any],
              osc: Any = None) -> None:
        self._put(("reply", which, envelope, parent_id, msg_type, content, osc))

    def close(self) -> None:
        with self._lock:
            for s in self._all:
                s.close(0)
            self._all.clear()


class Publisher:
    """Publishes events: per-job sequence numbers, the job's last event recorded in the queue, the signed
    frames on the PUB socket, and a copy to the job's OSC sender if it asked for one."""

    def __init__(self, pub_sock: zmq.Socket, key: str, session: str, store: JobStore,
                 osc: osc_server.OscSocket | None):
        self.pub_sock = pub_sock
        self.key = key
        self.session = session
        self.store = store
        self.osc = osc
        self.seqs: dict[str, int] = {}
        # job id -> (host, port, tag, progress): where to send the job's events over OSC
        self.osc_targets: dict[str, tuple[str, int, str, bool]] = {}

    def restore_osc_targets(self) -> None:
        """After a restart: OSC senders of jobs still queued or running get their events again."""
        for row in self.store.list(states=["queued", "running"], limit=1_000_000):
            if row["osc_reply"]:
                host, port, tag, progress = json.loads(row["osc_reply"])
                self.osc_targets[row["id"]] = (host, int(port), tag, bool(progress))

    def seq(self, job_id: str, default: int) -> int:
        return self.seqs.get(job_id, default)

    def publish(self, etype: str, content: dict[str, Any], topic: str | None = None) -> None:
        """Send one event: a job's (numbered, recorded) when ``content`` names a job, else on ``topic``
        (default ``daemon``)."""
        job_id = content.get("job_id")
        if job_id:
            seq = self.seqs.get(job_id)
            if seq is None:
                row = self.store.row(job_id)
                seq = row["event_seq"] if row else 0
            seq += 1
            self.seqs[job_id] = seq
            content["seq"] = seq
            topic = job_topic(job_id)
            try:
                self.store.note_event(job_id, seq, {"event": etype, **content},
                                      fraction=content.get("fraction") if etype == "progress" else None,
                                      stage=content.get("stage") if etype == "progress" else None)
            except Exception:  # noqa: BLE001
                log.exception("recording event failed")
        else:
            topic = topic or DAEMON_TOPIC
        frames, _ = wire.serialize(etype, content, key=self.key, session=self.session)
        try:
            self.pub_sock.send_multipart([topic.encode()] + frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("event %s not published: %s", etype, exc)
        if job_id:
            target = self.osc_targets.get(job_id)
            if target and self.osc:
                msg = osc_server.event_message(etype, content, target[2], target[3])
                if msg:
                    self.osc.send((target[0], target[1]), *msg)
            if etype in FINAL_EVENTS:
                self.seqs.pop(job_id, None)
                self.osc_targets.pop(job_id, None)
