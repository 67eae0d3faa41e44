"""Leases: one holder at a time for a named job, across every process that opens the same database.

A lease is a row (name, holder, expires_at). Taking it is one upsert that succeeds only when the row is
absent, expired, or already ours, so it works the same on SQLite (under the write lock) and PostgreSQL
(under the row lock). The holder renews it while working; a holder that dies stops renewing, and the
lease passes on once it expires.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from objstore.clock import Clock
from objstore.db.database import Connection, Database
from objstore.timestamps import from_micros, to_micros

__all__ = ["LeaseInfo", "Leases", "new_holder_id"]


def new_holder_id(role: str) -> str:
    """A holder id unique to this acquisition, that says where it runs: ``host:pid:role:random``."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{role}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class Leases:
    """Named leases in one database."""

    def __init__(self, database: Database, *, clock: Clock) -> None:
        self.db = database
        self.clock = clock
        sql = database.sql
        self._acquire = sql(
            "INSERT INTO leases (name, holder, acquired_at, expires_at) "
            "VALUES (:name, :holder, :now, :until) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, acquired_at = excluded.acquired_at, "
            "expires_at = excluded.expires_at WHERE leases.expires_at <= :now OR leases.holder = :holder"
        )
        self._renew = sql("UPDATE leases SET expires_at = :until WHERE name = :name AND holder = :holder")
        self._release = sql("DELETE FROM leases WHERE name = :name AND holder = :holder")
        self._get = sql("SELECT holder, acquired_at, expires_at FROM leases WHERE name = :name")

    def _change(self, statement: str, name: str, holder: str, ttl: timedelta) -> bool:
        # The clock is read inside the write transaction, after the write lock is held: read before, a
        # wait for the lock would be taken off the lease (another process could then take it early).
        def work(conn: Connection) -> bool:
            now = self.clock.now()
            params = {"name": name, "holder": holder, "now": to_micros(now), "until": to_micros(now + ttl)}
            return int(conn.execute(statement, params).rowcount) == 1

        return self.db.write(work)

    def acquire(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take the lease for ``ttl`` if it is free, expired or already ``holder``'s; True if taken."""
        return self._change(self._acquire, name, holder, ttl)

    def renew(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Extend ``holder``'s lease to now + ``ttl``; False if another holder has taken it over.

        A lease that expired without anyone taking it is still ``holder``'s row: nobody else ran the job
        in the meantime, so carrying on is safe. (A batch can wait a long while for a busy write lock; it
        should not throw away the job because of that.)
        """
        return self._change(self._renew, name, holder, ttl)

    def release(self, name: str, holder: str) -> None:
        """Give the lease up (nothing happens if ``holder`` no longer has it)."""
        self.db.write_one(self._release, {"name": name, "holder": holder})

    def current(self, name: str) -> LeaseInfo | None:
        """Who holds the lease (possibly expired), or None."""
        row = self.db.query_one(self._get, {"name": name})
        if row is None:
            return None
        holder, acquired_at, expires_at = row
        return LeaseInfo(name, holder, from_micros(acquired_at), from_micros(expires_at))
