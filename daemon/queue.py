"""The durable job queue: one SQLite table in WAL mode (settings.queue_db_path).

States: queued -> running -> done | failed | cancelled (queued -> cancelled directly). Higher priority
first, FIFO within a priority. After a crash, ``recover()`` puts running jobs back in the queue and
counts the crash against them (``crashes``); a job that was running when the daemon died
``MAX_CRASHES`` times is failed with ``daemon_crashed`` instead, so a request that kills the process
cannot loop. A job that was running at a crash runs alone when it runs again (it joins no batch and
nothing joins it), so it cannot take innocent jobs down with it a second time. Each job records the
model it was submitted for (``model``); after a restart, jobs submitted for another model than the one
now configured are failed with ``model_changed`` rather than rendered with the wrong model.

Each thread gets its own connection (the main loop inserts and cancels, the worker claims and finishes).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from ..client.protocol import ErrorReply, JobInfo, JobResult

MAX_ATTEMPTS = 3  # claims of one job (clean stops do not count)
MAX_CRASHES = 2  # daemon deaths while the job was running before it is failed
CRASHED = "the daemon stopped while running this job"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    task TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    tag TEXT,
    batch_key TEXT NOT NULL DEFAULT '',
    osc_reply TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    fraction REAL NOT NULL DEFAULT 0,
    stage TEXT,
    result TEXT,
    error TEXT,
    event_seq INTEGER NOT NULL DEFAULT 0,
    last_event TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs (state, priority DESC, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# Added after the first release: a database made before gets the column on open.
_MIGRATIONS = (
    ("request_id", "ALTER TABLE jobs ADD COLUMN request_id TEXT"),
    ("crashes", "ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0"),
    ("model", "ALTER TABLE jobs ADD COLUMN model TEXT"),
)
_INDEXES = "CREATE INDEX IF NOT EXISTS jobs_by_request_id ON jobs (request_id) WHERE request_id IS NOT NULL;"


def _start_row(db: Any, r: Any) -> dict[str, Any]:
    """Mark a queued row running (one more attempt) and return it as the worker sees it."""
    now = time.time()
    db.execute("UPDATE jobs SET state='running', started=?, attempts=attempts+1, fraction=0, stage=NULL "
               "WHERE id=? AND state='queued'", (now, r["id"]))
    d = dict(r)
    d.update(attempts=d["attempts"] + 1, started=now, state="running")
    if d.get("crashes"):
        d["batch_key"] = ""  # a job that was running at a crash runs alone (the worker joins nothing to it)
    return d


class CorruptQueue(Exception):
    """The queue database cannot be read (not SQLite, damaged pages, or a schema we cannot use)."""


def open_store(path: Path) -> tuple["JobStore", Path | None]:
    """The job store at ``path``; a corrupt database (and its -wal/-shm files) is first moved aside to
    ``<name>.corrupt-<UTC time>`` (kept for the user, never deleted) and an empty queue started. Returns
    (store, where the corrupt file went, or None)."""
    path = Path(path)
    try:
        return JobStore(path), None
    except CorruptQueue:
        pass
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    os.replace(path, aside)
    return JobStore(path), aside


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # User-only: the queue holds every request (texts, paths). SQLite gives its -wal/-shm files the
        # main file's mode, so setting it before the first connection covers all three.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)
        self._local = threading.local()
        self._lock = threading.RLock()  # serializes multi-statement transactions across threads
        try:
            with self._lock:
                db = self._db()
                # quick_check reads every page (the queue is small): damage found now, not mid-job.
                problems = [r[0] for r in db.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise CorruptQueue(f"{self.path}: " + "; ".join(problems[:3]))
                db.executescript(_SCHEMA)
                have = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
                for column, sql in _MIGRATIONS:
                    if column not in have:
                        db.execute(sql)
                db.executescript(_INDEXES)
        except sqlite3.DatabaseError as exc:
            self.close()
            # Only damage moves the file aside; "locked", "read-only", "disk I/O" stay errors of their own.
            if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise CorruptQueue(f"{self.path}: {exc}") from None
            raise
        except CorruptQueue:
            self.close()
            raise

    # -- connection ------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, store: "JobStore"):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            self.db = self.store._db()
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            try:
                self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()

    def _tx(self) -> "JobStore._Tx":
        return JobStore._Tx(self)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- writes ----------------------------------------------------------------------------------
    def add(self, job_id: str, task: str, priority: int, request: dict[str, Any], *, tag: str | None,
            batch_key: str, osc_reply: Any = None, max_queue: int | None = None,
            request_id: str | None = None, model: str | None = None) -> bool:
        """Insert a queued job (``model``: the model it is submitted for). False when ``max_queue`` jobs
        are already queued."""
        with self._tx() as db:
            if max_queue is not None:
                (n,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()
                if n >= max_queue:
                    return False
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()
            db.execute(
                "INSERT INTO jobs (id, seq, task, priority, state, request, tag, batch_key, osc_reply, created, "
                "request_id, model) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                (job_id, seq, task, priority, json.dumps(request), tag, batch_key,
                 None if osc_reply is None else json.dumps(osc_reply), time.time(), request_id, model),
            )
        return True

    def recover(self, model: str | None = None, log_hint: str = "") -> tuple[list[str], list[str]]:
        """After a restart: jobs that were running count a crash and go back to the queue (failed with
        ``daemon_crashed`` after MAX_CRASHES, or after MAX_ATTEMPTS claims); with ``model``, jobs
        submitted for another model fail with ``model_changed``. ``log_hint``: where the log is, for
        the error. Returns (requeued ids, failed ids)."""
        now = time.time()
        see = f"; see the daemon log ({log_hint})" if log_hint else "; see the daemon log"
        with self._tx() as db:
            rows = db.execute("SELECT id, attempts, crashes FROM jobs WHERE state='running'").fetchall()
            requeued, failed = [], []
            for r in rows:
                crashes = r["crashes"] + 1
                if crashes >= MAX_CRASHES or r["attempts"] >= MAX_ATTEMPTS:
                    err = ErrorReply(code="daemon_crashed", message=f"{CRASHED} ({crashes} times); it is not tried "
                                     f"again{see}", wanted="a different request (or report the log)")
                    db.execute("UPDATE jobs SET state='failed', finished=?, error=?, crashes=? WHERE id=?",
                               (now, err.model_dump_json(), crashes, r["id"]))
                    failed.append(r["id"])
                else:
                    db.execute("UPDATE jobs SET state='queued', fraction=0, stage=NULL, crashes=? WHERE id=?",
                               (crashes, r["id"]))
                    requeued.append(r["id"])
            if model is not None:
                for r in db.execute("SELECT id, model FROM jobs WHERE state='queued' AND model IS NOT NULL "
                                    "AND model<>?", (model,)).fetchall():
                    err = ErrorReply(code="model_changed", field="model",
                                     message=f"this job was submitted for model {r['model']!r}; the daemon now "
                                             f"serves {model!r}", wanted="submit it again (or serve the model it "
                                                                         "was made for)")
                    db.execute("UPDATE jobs SET state='failed', finished=?, error=? WHERE id=?",
                               (now, err.model_dump_json(), r["id"]))
                    failed.append(r["id"])
                    if r["id"] in requeued:
                        requeued.remove(r["id"])
        return requeued, failed

    def claim(self, max_batch: int) -> list[dict[str, Any]]:
        """Move the next job, plus up to max_batch-1 queued jobs with the same batch key, to running."""
        with self._tx() as db:
            first = db.execute(
                "SELECT * FROM jobs WHERE state='queued' ORDER BY priority DESC, seq LIMIT 1").fetchone()
            if first is None:
                return []
            rows = [first]
            if max_batch > 1 and first["batch_key"] and not first["crashes"]:
                rows += db.execute(
                    "SELECT * FROM jobs WHERE state='queued' AND batch_key=? AND id<>? AND crashes=0 "
                    "ORDER BY priority DESC, seq LIMIT ?", (first["batch_key"], first["id"], max_batch - 1)).fetchall()
            return [_start_row(db, r) for r in rows]

    def claim_next(self, batch_key: str | None = None) -> dict[str, Any] | None:
        """Move the head of the queue (highest priority, then oldest) to running, if it may join a
        batch of ``batch_key`` (None: an empty batch, anything goes; "": nothing joins). A head that
        may not join stays queued, and so does everything behind it: priority stays strict."""
        with self._tx() as db:
            r = db.execute("SELECT * FROM jobs WHERE state='queued' ORDER BY priority DESC, seq LIMIT 1").fetchone()
            if r is None or (batch_key is not None and (not batch_key or r["batch_key"] != batch_key or r["crashes"])):
                return None
            return _start_row(db, r)

    def cancel_queued(self, job_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state='cancelled', finished=? WHERE id=? AND state='queued'",
                             (time.time(), job_id))
            return cur.rowcount == 1

    def finish(self, job_id: str, state: str, *, result: JobResult | None = None,
               error: ErrorReply | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, finished=?, fraction=CASE WHEN ?='done' THEN 1 ELSE fraction END, "
                "result=?, error=? WHERE id=? AND state='running'",
                (state, time.time(), state, None if result is None else result.model_dump_json(),
                 None if error is None else error.model_dump_json(), job_id),
            )

    def requeue(self, job_id: str, *, count_attempt: bool = False) -> None:
        """A running job goes back to the queue. After a clean shutdown the attempt does not count; after a
        crash of the process that ran it (a Ray actor that died) it does (``count_attempt``)."""
        keep = "attempts" if count_attempt else "MAX(attempts-1, 0)"
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET state='queued', attempts={keep}, fraction=0, stage=NULL, "
                       "started=NULL WHERE id=? AND state='running'", (job_id,))

    def note_event(self, job_id: str, seq: int, event: dict[str, Any], *, fraction: float | None = None,
                   stage: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET event_seq=?, last_event=?, fraction=COALESCE(?, fraction), stage=COALESCE(?, stage) "
                "WHERE id=?", (seq, json.dumps(event), fraction, stage, job_id))

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- reads -----------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        r = self._db().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if r is None else r[0]

    def row(self, job_id: str) -> dict[str, Any] | None:
        r = self._db().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if r is None else dict(r)

    def by_request_id(self, request_id: str, since: float) -> dict[str, Any] | None:
        """The newest job submitted with this idempotency key at or after ``since`` (Unix time)."""
        r = self._db().execute("SELECT * FROM jobs WHERE request_id=? AND created>=? ORDER BY seq DESC LIMIT 1",
                               (request_id, since)).fetchone()
        return None if r is None else dict(r)

    def state(self, job_id: str) -> str | None:
        r = self._db().execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if r is None else r[0]

    def queued_count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0]

    def running_ids(self) -> list[str]:
        return [r[0] for r in self._db().execute("SELECT id FROM jobs WHERE state='running' ORDER BY seq")]

    def position(self, job_id: str) -> int | None:
        r = self._db().execute("SELECT priority, seq, state FROM jobs WHERE id=?", (job_id,)).fetchone()
        if r is None or r["state"] != "queued":
            return None
        (n,) = self._db().execute(
            "SELECT COUNT(*) FROM jobs WHERE state='queued' AND (priority>? OR (priority=? AND seq<?))",
            (r["priority"], r["priority"], r["seq"])).fetchone()
        return int(n)

    def list(self, states: Iterable[str] | None = None, task: str | None = None, limit: int = 100,
             newest_first: bool = True) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM jobs", []
        where = []
        if states:
            states = list(states)
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if task:
            where.append("task=?")
            args.append(task)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(limit)
        return [dict(r) for r in self._db().execute(q, args)]


def row_to_info(row: dict[str, Any], *, position: int | None = None, eta_s: float | None = None,
                with_request: bool = True) -> JobInfo:
    return JobInfo(
        job_id=row["id"], task=row["task"], state=row["state"], priority=row["priority"], tag=row["tag"],
        created=row["created"], started=row["started"], finished=row["finished"], attempts=row["attempts"],
        position=position, eta_s=eta_s, fraction=row["fraction"] or 0.0, stage=row["stage"],
        result=None if not row["result"] else JobResult.model_validate_json(row["result"]),
        error=None if not row["error"] else ErrorReply.model_validate_json(row["error"]),
        request=json.loads(row["request"]) if with_request else None,
    )
