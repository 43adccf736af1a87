"""Remote localisation: a remote host's finished audio (and previews) brought to this machine.

A remote host writes into its own output folder; this client remembers the folder and name it was
asked for, fetches the file (checked by size and sha256, see :func:`.remote.receive_file`) once the job
is done, and hands out the local copy's path instead of the host's.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from . import protocol as P
from .errors import ClientError
from .jobs import GenerationResult

__all__ = ["RemoteDelivery"]


class RemoteDelivery:
    """Per-client record of where each remote job's audio should land, and where it did."""

    def __init__(self, client: Any):  # the Client (which imports this module)
        self.client = client
        self._wanted: dict[str, tuple[Path, str | None]] = {}  # job -> (local folder, name) asked for
        self._delivered: dict[str, str] = {}  # job -> its local copy
        self._host_paths: dict[str, str] = {}  # job -> where the host wrote it

    def outgoing(self, request: P.SubmitRequest) -> tuple[P.SubmitRequest, tuple[Path, str | None] | None]:
        """The request as the host gets it, and the local (folder, name) it asked for. The folder is this
        machine's: the host writes into its own output folder (under the same name), and the result is
        brought here when the job is done."""
        if not request.output.folder:
            return request, None
        wanted = (Path(request.output.folder), request.output.name)
        return request.model_copy(update={"output": request.output.model_copy(update={"folder": None})}), wanted

    def expect(self, job_id: str, wanted: tuple[Path, str | None]) -> None:
        self._wanted[job_id] = wanted

    def localize_done(self, job_id: str, ev: P.DoneEvent) -> P.DoneEvent:
        """The ``done`` event with the local copy's path (the host's path kept for the result)."""
        try:
            local = self.local_path(job_id, ev.path)
        except ClientError as exc:  # e.g. the host removed the file: the host path stays, said once
            self.client._notice(f"job {job_id}: its audio could not be fetched from {self.client.info.name}: {exc}")
            return ev
        self._host_paths[job_id] = ev.path
        side = Path(local).with_suffix(".json")
        return ev.model_copy(update={"path": local, "sidecar": str(side) if side.is_file() else ""})

    def local_path(self, job_id: str, path: str) -> str:
        """The file (and its sidecar) fetched once, to the ``output`` this client asked for, else into this
        machine's output folder under the host's file name; that copy's path."""
        done = self._delivered.get(job_id)
        if done is not None and Path(done).is_file():
            return done
        folder, name = self._wanted.get(job_id, (self.client.settings.output_path, None))
        dest = folder / (f"{name}.wav" if name else Path(path).name)
        self.client.fetch(job_id, dest)
        with contextlib.suppress(ClientError):
            self.client.fetch(job_id, dest.with_suffix(".json"), part="sidecar")
        self._wanted.pop(job_id, None)
        self._delivered[job_id] = str(dest)
        return str(dest)

    def bring_home(self, res: GenerationResult) -> GenerationResult:
        host_path = self._host_paths.get(res.job_id, res.path)
        local = Path(self.local_path(res.job_id, host_path))
        sidecar = local.with_suffix(".json")
        return res.model_copy(update={"path": str(local), "sidecar": str(sidecar) if sidecar.is_file() else "",
                                      "host_path": host_path})

    def partial(self, job_id: str, path: str) -> str | None:
        """A preview fetched into the cache folder; None when the host already replaced it."""
        name = Path(path).name
        local = self.client.settings.cache_path / "partials" / job_id / name
        try:
            self.client.fetch(job_id, local, part="partial", name=name)
        except ClientError:
            return None  # superseded and removed on the host already: the next one follows
        return str(local)
