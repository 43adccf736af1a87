"""OSC bridge: turns OSC datagrams (daemon/osc_server.py parses and formats them) into the same typed
requests ZeroMQ carries, runs them through the same handlers, and answers the sender over UDP."""
from __future__ import annotations

from typing import Any

from ..client.protocol import ProtocolError, dump, parse_request
from . import osc_server
from .events import Publisher
from .handlers import Handlers
from .logs import get_logger

log = get_logger("server")


class OscBridge:
    def __init__(self, osc: osc_server.OscSocket, handlers: Handlers, publisher: Publisher):
        self.osc = osc
        self.handlers = handlers
        self.publisher = publisher

    def send_error(self, to: tuple[str, int], content: dict[str, Any], tag: str) -> None:
        """An error answered later (by the worker) to an OSC sender."""
        self.osc.send(to, *osc_server.error_message(ProtocolError(**content), tag))

    def handle_readable(self) -> None:
        for data, sender in self.osc.recv_all():
            try:
                messages = osc_server.iter_messages(data)
            except Exception as exc:  # noqa: BLE001 - python-osc raises ParseError and others
                log.warning("malformed OSC datagram from %s:%s: %s", sender[0], sender[1], exc)
                self.osc.send(sender, *osc_server.error_message(
                    ProtocolError("bad_message", f"not an OSC message: {exc}", field="datagram"), ""))
                continue
            for address, args in messages:
                self.handle_message(address, args, sender)

    def handle_message(self, address: str, args: list[Any], sender: tuple[str, int]) -> None:
        reply_to, tag = sender, ""
        try:
            oreq = osc_server.parse(address, args, sender)
            reply_to, tag = oreq.reply_to, oreq.tag
            try:
                req = parse_request(oreq.msg_type, oreq.content)
            except ProtocolError as exc:
                exc.field = osc_server.osc_field(exc.field)
                raise
            out = self.handlers.dispatch(oreq.msg_type, req, deferred=("osc", [], ""),
                                         osc=(reply_to, tag, oreq.progress))
            if out is None:
                return
            reply, after = out
            if oreq.msg_type == "cancel" and getattr(reply, "pending", False):
                self.publisher.osc_targets.setdefault(reply.job_id, (reply_to[0], reply_to[1], tag, False))
            for msg in osc_server.reply_messages(oreq.msg_type, dump(reply), tag):
                self.osc.send(reply_to, *msg)
            if after:
                after()
        except ProtocolError as exc:
            log.warning("OSC %s from %s:%s rejected: %s %s%s", address, sender[0], sender[1], exc.code, exc.message,
                        f" (argument {exc.field})" if exc.field else "")
            exc.field = osc_server.osc_field(exc.field)
            self.osc.send(reply_to, *osc_server.error_message(exc, tag))
        except Exception as exc:  # noqa: BLE001
            log.exception("OSC %s failed", address)
            self.osc.send(reply_to, *osc_server.error_message(ProtocolError("internal", str(exc)), tag))
