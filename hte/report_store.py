"""Where published reports live: a SQL database through SQLAlchemy, behind unguessable links.

- Storage: a SQLite file by default (``.hte/reports.db`` under the working directory), or any
  SQLAlchemy URL, such as ``postgresql+psycopg://user:password@host/db`` when several app
  servers share the reports. The URL comes from the argument, else the environment variable
  ``HTE_REPORTS_URL``. The schema is created on first use and versioned (``hte_schema_version``
  and :data:`MIGRATIONS`), so later releases can migrate it in place.
- Links: a report's token is 32 random bytes from :mod:`secrets` (43 URL-safe characters,
  256 bits), derived from nothing. Only its SHA-256 is stored, so a copy of the database does
  not hold working links. Publishing also returns an owner key, shown once, which revokes
  (deletes) the report; the database holds only a salted hash of it, compared in constant time.
- Messages: every unknown, malformed, expired or revoked token gets the same
  :data:`INVALID_LINK` message, and a failed revocation :data:`WRONG_KEY`, whether or not the
  token exists, so nobody learns which reports exist. Database failures give
  :data:`UNAVAILABLE`, which never includes the URL or the driver's error text.

A stored report is one row: JSON metadata (text) plus the compressed draws (``.npz`` bytes,
read back with ``allow_pickle=False``); see :meth:`hte.reports.Snapshot.to_payload`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from hte.errors import ReportError
from hte.report_limits import PublishRate, ReportLimits
from hte.reports import PAYLOAD_FORMAT, Snapshot

ENV_URL = "HTE_REPORTS_URL"
DEFAULT_PATH = Path(".hte") / "reports.db"
TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)

INVALID_LINK = ("This report link is not valid. It may have expired or been withdrawn; ask the "
                "person who shared it for a new link.")
WRONG_KEY = ("This owner key does not match the report link, or the link is no longer valid. "
             "Check that both were copied in full.")
UNAVAILABLE = ("Reports cannot be reached right now. Try again in a few minutes; if it keeps "
               "happening, tell whoever runs this dashboard.")
BAD_URL = (f"The report storage address (for example in {ENV_URL}) is not a database URL "
           "SQLAlchemy understands, such as sqlite:///reports.db or "
           "postgresql+psycopg://user@host/db.")
NEWER_SCHEMA = ("The report database was set up by a newer version of hte. Upgrade hte on this "
                "server to open it.")

# --------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------

_metadata = MetaData()
# MySQL's TEXT and BLOB hold 64 KB; reports are larger (other databases have no such limit).
_LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_LONG_BLOB = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
SCHEMA_TABLE = Table(
    "hte_schema_version", _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: a single row
    Column("version", Integer, nullable=False),
)
REPORTS = Table(
    "hte_reports", _metadata,
    Column("token_hash", String(64), primary_key=True),   # sha256(token), hex
    Column("owner_key_hash", String(200), nullable=False),  # "sha256$<salt hex>$<digest hex>"
    Column("created", BigInteger, nullable=False),        # Unix seconds, UTC
    Column("expires", BigInteger, nullable=True),         # Unix seconds, UTC; NULL: never
    Column("format", Integer, nullable=False),            # hte.reports.PAYLOAD_FORMAT
    Column("meta", _LONG_TEXT, nullable=False),           # JSON
    Column("payload", _LONG_BLOB, nullable=False),        # np.savez_compressed bytes
    Index("ix_hte_reports_expires", "expires"),
)


def _v1(conn: Connection) -> None:
    """The reports table. (When a later migration alters it, freeze this DDL here first.)"""
    REPORTS.create(conn)


def _v2(conn: Connection) -> None:
    """MySQL/MariaDB: widen the text and payload columns of tables made by version 1, which
    would have cut reports off at 64 KB. Nothing to do elsewhere."""
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.execute(text("ALTER TABLE hte_reports MODIFY meta LONGTEXT NOT NULL, "
                          "MODIFY payload LONGBLOB NOT NULL"))


#: Schema migrations, in order; the database records how many have been applied.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)
_PG_LOCK = 0x6874655F72657074  # pg_advisory_xact_lock key ("hte_rept")


# --------------------------------------------------------------------------------------------
# Tokens and keys
# --------------------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh random link token: 32 bytes from :mod:`secrets`, 43 URL-safe characters."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_well_formed(token: Any) -> bool:
    """Whether ``token`` could be a token at all (checked before touching the database)."""
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def token_hash(token: str) -> str:
    """What the database stores in place of a token (the token has 256 bits: no salt needed)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def hash_owner_key(key: str, salt: bytes | None = None) -> str:
    """A salted SHA-256 of an owner key, as ``sha256$<salt>$<digest>``.

    The key is 256 random bits, so a slow password hash would add nothing; the format names
    its algorithm so a different one can be introduced later.
    """
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.sha256(salt + key.encode("utf-8")).hexdigest()
    return f"sha256${salt.hex()}${digest}"


def check_owner_key(key: str, stored: str) -> bool:
    """Whether ``key`` matches the stored hash, compared in constant time."""
    try:
        algorithm, salt, _ = stored.split("$")
        if algorithm != "sha256":
            return False
        expected = hash_owner_key(key, bytes.fromhex(salt))
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), stored.encode("ascii"))


_DUMMY_HASH = hash_owner_key(new_token())


def keyed_fingerprint(fingerprint: str, owner_key: str) -> str:
    """The data fingerprint as published: an HMAC-SHA256 keyed with the report's owner key.

    A plain hash of the data would let any reader confirm a guess about the data offline; the
    keyed one can be matched to a file only by whoever holds the owner key.
    """
    digest = hmac.new(owner_key.encode("utf-8"), str(fingerprint).encode("utf-8"),
                      hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def default_url() -> str:
    """``HTE_REPORTS_URL`` if set, else a SQLite file ``.hte/reports.db`` here."""
    url = os.environ.get(ENV_URL, "").strip()
    return url or f"sqlite:///{(Path.cwd() / DEFAULT_PATH).as_posix()}"


def make_engine(url: str) -> Engine:
    """An engine with pooling suited to the backend.

    SQLite: ``check_same_thread=False`` (pooled connections move between threads), WAL journal
    (readers do not block the writer), a 30 s busy timeout, ``secure_delete`` (revoked reports
    are overwritten, not just unlinked), and real transactions: ``BEGIN IMMEDIATE`` for writes,
    so concurrent publishers queue instead of failing. Other databases: a small pool that
    checks connections before use and recycles them every 30 minutes.
    """
    try:
        u = make_url(url)
        backend = u.get_backend_name()
    except (ArgumentError, ValueError) as err:
        raise ReportError(BAD_URL) from err
    if backend != "sqlite":
        try:
            return create_engine(u, pool_size=5, max_overflow=10, pool_timeout=30,
                                 pool_pre_ping=True, pool_recycle=1800)
        except (ArgumentError, ImportError, SQLAlchemyError) as err:
            raise ReportError(BAD_URL) from err
    database = u.database or ""
    memory = database in ("", ":memory:") or "mode=memory" in database
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ReportError(UNAVAILABLE) from err
        kwargs.update(pool_size=5, max_overflow=15, pool_timeout=60)
    engine = create_engine(u, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "secure_delete=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("hte_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


class ReportStore:
    """Published reports in one database. Thread-safe: share one store per process.

    >>> store = ReportStore()                 # HTE_REPORTS_URL, else .hte/reports.db
    >>> token, owner_key = store.publish(snapshot)
    >>> store.open(token).effects(threshold=0.1)
    >>> store.revoke(token, owner_key)
    """

    #: Expired reports are deleted at most this often (seconds) when reports are opened.
    PURGE_EVERY = 600.0
    #: At most this many report views are kept in memory.
    CACHE_SIZE = 16

    def __init__(self, url: str | None = None, limits: ReportLimits | None = None) -> None:
        self._engine = make_engine(url or default_url())
        self.limits = ReportLimits.from_env() if limits is None else limits
        self._rate = PublishRate(self.limits.publishes_per_hour)
        self._ready = False
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, Snapshot]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._purged = time.monotonic()

    @property
    def backend(self) -> str:
        """``"sqlite"``, ``"postgresql"``, ..."""
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"ReportStore({self._engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> ReportStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Connection]:
        """A transaction, with any database failure turned into :data:`UNAVAILABLE`."""
        try:
            self._ensure_schema()
            with self._engine.connect() as conn:
                if write:
                    conn = conn.execution_options(hte_write=True)
                with conn.begin():
                    yield conn
        except (ReportError, IntegrityError):
            raise
        except SQLAlchemyError as err:
            raise ReportError(UNAVAILABLE) from err

    def _ensure_schema(self) -> None:
        """Create or migrate the schema once per store, serialized across servers."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                with self._engine.connect() as conn:
                    conn = conn.execution_options(hte_write=True)
                    with conn.begin():
                        self._migrate(conn)
            except ReportError:
                raise
            except SQLAlchemyError as err:
                raise ReportError(UNAVAILABLE) from err
            self._ready = True

    def _migrate(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":  # one migrating server at a time
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        SCHEMA_TABLE.create(conn, checkfirst=True)
        current = conn.execute(select(SCHEMA_TABLE.c.version)
                               .where(SCHEMA_TABLE.c.id == 1)).scalar()
        if current is None:
            conn.execute(insert(SCHEMA_TABLE).values(id=1, version=0))
            current = 0
        if current > SCHEMA_VERSION:
            raise ReportError(NEWER_SCHEMA)
        for migration in MIGRATIONS[current:]:
            migration(conn)
        if current != SCHEMA_VERSION:
            conn.execute(update(SCHEMA_TABLE).where(SCHEMA_TABLE.c.id == 1)
                         .values(version=SCHEMA_VERSION))

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._transaction() as conn:
            return int(conn.execute(select(SCHEMA_TABLE.c.version)).scalar_one())

    # -- the API -----------------------------------------------------------------------------
    def publish(self, snapshot: Snapshot, publisher: str | None = None) -> tuple[str, str]:
        """Store ``snapshot``; returns ``(token, owner_key)``. Show the owner key only once.

        The server's :class:`~hte.report_limits.ReportLimits` are enforced here, whoever calls:
        every published group has at least ``limits.min_cell`` people in each arm, and the
        report's groups, size, title and note are within bounds. ``publisher`` (a session id)
        is held to ``limits.publishes_per_hour``. The data fingerprint is stored keyed with the
        owner key (:func:`keyed_fingerprint`), so only the owner can match it to a file.
        Expired reports are deleted in the same transaction.
        """
        if not isinstance(snapshot, Snapshot):
            raise TypeError("publish() takes a hte.reports.Snapshot")
        now = _now()
        expires = int(snapshot.expires.timestamp()) if snapshot.expires else None
        if expires is not None and expires <= now:
            raise ReportError("The expiry date has already passed. Choose a later date, or none.")
        self._check(snapshot)
        meta, blob = snapshot.to_payload()
        if len(blob) + len(json.dumps(meta)) > self.limits.max_bytes:
            raise ReportError(
                f"This report would take {(len(blob) + len(json.dumps(meta))) / 2**20:.1f} MB, "
                f"more than the {self.limits.max_megabytes:g} MB this server allows. Publish "
                "fewer factors or leave out the pairs of factors.")
        if publisher is not None:
            self._rate.take(str(publisher))
        owner_key = new_token()
        if meta["data"].get("fingerprint"):  # a new dict: the snapshot's own stays as it is
            meta["data"] = {**meta["data"], "fingerprint": keyed_fingerprint(
                meta["data"]["fingerprint"], owner_key)}
        row = {"owner_key_hash": hash_owner_key(owner_key), "created": now, "expires": expires,
               "format": PAYLOAD_FORMAT, "meta": json.dumps(meta), "payload": blob}
        for _ in range(3):  # a repeated 256-bit token is practically impossible; still, retry
            token = new_token()
            try:
                with self._transaction(write=True) as conn:
                    conn.execute(delete(REPORTS).where(REPORTS.c.expires <= now))
                    conn.execute(insert(REPORTS).values(token_hash=token_hash(token), **row))
                return token, owner_key
            except IntegrityError:
                continue
        raise ReportError(UNAVAILABLE)

    def _check(self, snapshot: Snapshot) -> None:
        """The limits a snapshot must meet, with a sentence for the one it does not."""
        lim = self.limits
        if snapshot.min_cell < lim.min_cell:
            raise ReportError(f"This server publishes only groups with at least {lim.min_cell:,} "
                              "people in each arm; choose a smallest group of at least "
                              f"{lim.min_cell:,}.")
        groups = snapshot.groups
        k = snapshot.min_cell
        small = (groups["n_treated"] < k) | (groups["n_control"] < k)
        if bool(small.any()):
            raise ReportError(f"The report holds a group with fewer than {snapshot.min_cell:,} "
                              "people in one arm, which must be withheld. Build it with "
                              "Snapshot.from_fit.")
        if len(groups) > lim.max_groups:
            raise ReportError(f"This report has {len(groups):,} groups, more than the "
                              f"{lim.max_groups:,} this server allows. Publish fewer factors or "
                              "leave out the pairs of factors.")
        for what, value, limit in (("title", snapshot.title, lim.max_title),
                                   ("note", snapshot.note, lim.max_note)):
            if len(value) > limit:
                raise ReportError(f"The {what} is too long ({len(value):,} characters); keep it "
                                  f"under {limit:,}.")

    def status(self, token: Any) -> datetime | None:
        """When the report behind ``token`` expires (None: never), reading nothing else;
        :data:`INVALID_LINK` for any token that does not work."""
        if not is_well_formed(token):
            raise ReportError(INVALID_LINK)
        self._maybe_purge()
        with self._transaction() as conn:
            row = conn.execute(select(REPORTS.c.expires)
                               .where(REPORTS.c.token_hash == token_hash(token))).first()
        if row is None or (row.expires is not None and row.expires <= _now()):
            self._forget(token_hash(token))
            raise ReportError(INVALID_LINK)
        return None if row.expires is None else datetime.fromtimestamp(row.expires, UTC)

    def open(self, token: Any) -> Snapshot:
        """The report behind ``token``; :data:`INVALID_LINK` for any token that does not work.

        Whether the report still exists and has not expired is checked on every call (one
        small query); the report itself is read and decompressed at most once per
        ``limits.cache_seconds`` and kept in memory in between (snapshots are immutable).
        """
        self.status(token)
        h = token_hash(token)
        with self._cache_lock:
            hit = self._cache.get(h)
            if hit is not None and time.monotonic() - hit[0] < self.limits.cache_seconds:
                self._cache.move_to_end(h)
                return hit[1]
        with self._transaction() as conn:
            row = conn.execute(select(REPORTS.c.expires, REPORTS.c.format, REPORTS.c.meta,
                                      REPORTS.c.payload)
                               .where(REPORTS.c.token_hash == h)).first()
        if row is None or (row.expires is not None and row.expires <= _now()):
            raise ReportError(INVALID_LINK)
        try:
            if row.format != PAYLOAD_FORMAT:
                raise ReportError(f"unknown payload format {row.format}")
            snapshot = Snapshot.from_payload(json.loads(row.meta), bytes(row.payload))
        except (ReportError, ValueError) as err:  # damaged or foreign: say the same thing
            raise ReportError(INVALID_LINK) from err
        if self.limits.cache_seconds > 0:
            with self._cache_lock:
                self._cache[h] = (time.monotonic(), snapshot)
                self._cache.move_to_end(h)
                while len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        return snapshot

    def _forget(self, h: str) -> None:
        with self._cache_lock:
            self._cache.pop(h, None)

    def _maybe_purge(self) -> None:
        """Delete expired reports if that has not been done for :attr:`PURGE_EVERY` seconds
        (best effort: a busy or unreachable database is left for the next time)."""
        now = time.monotonic()
        if now - self._purged < self.PURGE_EVERY:
            return
        self._purged = now
        with suppress(ReportError):
            self.purge_expired()

    def revoke(self, token: Any, owner_key: Any) -> None:
        """Delete the report, given its owner key; :data:`WRONG_KEY` otherwise (also for a
        token that does not exist, so the answer does not reveal whether it does)."""
        if not (is_well_formed(token) and is_well_formed(owner_key)):
            raise ReportError(WRONG_KEY)
        h = token_hash(token)
        with self._transaction(write=True) as conn:
            stored = conn.execute(select(REPORTS.c.owner_key_hash)
                                  .where(REPORTS.c.token_hash == h)).scalar()
            if not check_owner_key(owner_key, stored if stored is not None else _DUMMY_HASH) \
                    or stored is None:
                raise ReportError(WRONG_KEY)
            conn.execute(delete(REPORTS).where(REPORTS.c.token_hash == h,
                                               REPORTS.c.owner_key_hash == stored))
        self._forget(h)
        self._scrub()

    def purge_expired(self) -> int:
        """Delete every expired report; returns how many were deleted."""
        with self._transaction(write=True) as conn:
            result = conn.execute(delete(REPORTS).where(REPORTS.c.expires <= _now()))
        self._scrub()
        return int(result.rowcount or 0)

    def _scrub(self) -> None:
        """SQLite: fold the write-ahead log into the file and truncate it, so the old copies of
        deleted reports it still holds are gone too (``secure_delete`` zeroes them in the file).
        Best effort: skipped while readers hold the log. PostgreSQL reclaims deleted rows at its
        next VACUUM."""
        if self.backend != "sqlite":
            return
        try:
            with self._engine.connect() as conn:
                dbapi = conn.connection.driver_connection
                if dbapi is not None:
                    dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except (SQLAlchemyError, sqlite3.Error):
            pass
