"""Report storage: publish/open/revoke, tokens, concurrency, schema versions; SQLite and PostgreSQL.

Every test runs on a fresh SQLite file and, when ``HTE_TEST_POSTGRES_URL`` is set, on a fresh
PostgreSQL schema (skipped otherwise, unless ``HTE_REQUIRE_POSTGRES=1``, which makes it fail).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import secrets
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url

import hte.report_store as rs
from hte.errors import ReportError
from hte.report_store import (
    INVALID_LINK,
    REPORTS,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    UNAVAILABLE,
    WRONG_KEY,
    ReportStore,
    check_owner_key,
    hash_owner_key,
    new_token,
)
from hte.reports import Snapshot

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "HTE_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def snapshot(gaussian_fit) -> Snapshot:
    return Snapshot.from_fit(gaussian_fit, title="Sample report", note="Shared for review.",
                             max_draws=200, threshold=0.1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reports.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("HTE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"HTE_REQUIRE_POSTGRES=1 but {PG_ENV} is not set.")
        pytest.skip(f"set {PG_ENV} to run the PostgreSQL store tests")
    schema = f"hte_test_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(url):
    with ReportStore(url) as s:
        yield s


def message(call, *args) -> str:
    with pytest.raises(ReportError) as info:
        call(*args)
    return str(info.value)


# -- publish and open --------------------------------------------------------------------------


def test_publish_then_open_with_a_new_store(url, store, snapshot):
    token, owner_key = store.publish(snapshot)
    with ReportStore(url) as other:  # a new engine on the same database
        opened = other.open(token)
    pd.testing.assert_frame_equal(opened.effects(), snapshot.effects())
    pd.testing.assert_frame_equal(opened.effects(0.3, 0.5, 0.8), snapshot.effects(0.3, 0.5, 0.8))
    pd.testing.assert_frame_equal(opened.groups, snapshot.groups)
    np.testing.assert_array_equal(opened.draws, snapshot.draws)
    published = {**snapshot.data,  # everything as it was, the fingerprint keyed
                 "fingerprint": rs.keyed_fingerprint(snapshot.data["fingerprint"], owner_key)}
    assert (opened.title, opened.note, opened.formula, opened.data, opened.diagnostics) == (
        snapshot.title, snapshot.note, snapshot.formula, published, snapshot.diagnostics)
    assert token != owner_key


def test_open_in_another_process(url, store, snapshot, tmp_path: Path):
    token, _ = store.publish(snapshot)
    out = tmp_path / "opened.pkl"
    code = textwrap.dedent("""
        import pickle, sys
        from hte.report_store import ReportStore
        snap = ReportStore(sys.argv[1]).open(sys.argv[2])
        with open(sys.argv[3], "wb") as fh:
            pickle.dump((snap.effects(), snap.effects(0.2, 0.8), "jax" in sys.modules), fh)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, url, token, str(out)], check=True, cwd=ROOT,
                   env=env, timeout=300)
    with out.open("rb") as fh:
        effects, other, jax_loaded = pickle.load(fh)  # our own file, written just above
    pd.testing.assert_frame_equal(effects, snapshot.effects())
    pd.testing.assert_frame_equal(other, snapshot.effects(0.2, 0.8))
    assert not jax_loaded  # viewing a report needs no JAX


def test_concurrent_publishing_loses_and_mixes_nothing(store, snapshot):
    def publish(i: int) -> tuple[int, str]:
        snap = dataclasses.replace(snapshot, title=f"report {i}", draws=snapshot.draws + i)
        return i, store.publish(snap)[0]

    with ThreadPoolExecutor(max_workers=20) as pool:
        published = list(pool.map(publish, range(20)))
    assert len({token for _, token in published}) == 20
    for i, token in published:
        opened = store.open(token)
        assert opened.title == f"report {i}"
        np.testing.assert_array_equal(opened.draws, snapshot.draws + np.float32(i))


def test_concurrent_first_use_creates_the_schema_once(url, snapshot):
    stores = [ReportStore(url) for _ in range(6)]
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            tokens = list(pool.map(lambda s: s.publish(snapshot)[0], stores))
        assert all(s.open(t).title == snapshot.title for s, t in zip(stores, tokens,
                                                                      strict=True))
        assert stores[0].schema_version() == SCHEMA_VERSION
    finally:
        for s in stores:
            s.close()


# -- tokens and keys ---------------------------------------------------------------------------


def test_tokens_are_long_random_and_distinct():
    tokens = [new_token() for _ in range(1000)]
    assert len(set(tokens)) == 1000
    assert all(len(t) == 43 and rs.is_well_formed(t) for t in tokens)
    assert len(tokens[0]) * 6 >= 256  # 43 base64 characters carry 32 random bytes
    # all 64 URL-safe characters occur: no fixed structure to guess
    assert set("".join(tokens)) == set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_tokens_are_not_derived_from_the_content(store, snapshot):
    (t1, k1), (t2, k2) = store.publish(snapshot), store.publish(snapshot)
    assert len({t1, t2, k1, k2}) == 4
    assert store.open(t1).title == store.open(t2).title == snapshot.title


def test_the_database_holds_hashes_not_secrets(url, store, snapshot):
    token, owner_key = store.publish(snapshot)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(REPORTS.c.token_hash, REPORTS.c.owner_key_hash)).all()
    engine.dispose()
    assert len(rows) == 1
    stored_token, stored_key = rows[0]
    assert stored_token == hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored_key and owner_key not in stored_key and owner_key not in rows[0]
    assert check_owner_key(owner_key, stored_key)
    assert not check_owner_key(owner_key[:-1] + ("A" if owner_key[-1] != "A" else "B"),
                               stored_key)
    h1, h2 = hash_owner_key(owner_key), hash_owner_key(owner_key)
    assert h1 != h2 and check_owner_key(owner_key, h1) and check_owner_key(owner_key, h2)
    assert not check_owner_key(owner_key, "md5$00$00") and not check_owner_key(owner_key, "x")


MALFORMED = ["", " ", "x" * 10_000, "../../etc/passwd", "a b c", "'; DROP TABLE hte_reports;--",
             '"quoted"', "Zoë🚀" * 10, "ü" * 43, "A" * 42, "A" * 44, "\x00" * 43, None, 12345,
             b"A" * 43]


def test_unknown_malformed_expired_and_revoked_tokens_get_one_message(
        store, snapshot, monkeypatch):
    expiring = dataclasses.replace(snapshot, expires=datetime.now(UTC) + timedelta(hours=1))
    expired, _ = store.publish(expiring)
    revoked, owner_key = store.publish(snapshot)
    kept, _ = store.publish(snapshot)
    store.revoke(revoked, owner_key)
    assert store.open(expired).expires is not None
    monkeypatch.setattr(rs, "_now", lambda: int(datetime.now(UTC).timestamp()) + 7200)
    messages = {message(store.open, t) for t in [*MALFORMED, new_token(), expired, revoked]}
    assert messages == {INVALID_LINK}
    assert store.open(kept).title == snapshot.title
    assert store.purge_expired() == 1


def test_a_wrong_owner_key_cannot_revoke(store, snapshot):
    token, owner_key = store.publish(snapshot)
    other_token, other_key = store.publish(snapshot)
    attempts = [(token, other_key), (token, new_token()), (token, ""), (token, owner_key + " "),
                (new_token(), owner_key), ("../" + token, owner_key), (None, None)]
    assert {message(store.revoke, t, k) for t, k in attempts} == {WRONG_KEY}
    assert store.open(token).title == snapshot.title  # still there
    store.revoke(token, owner_key)
    assert message(store.open, token) == INVALID_LINK
    assert message(store.revoke, token, owner_key) == WRONG_KEY  # gone: same answer as unknown
    assert store.open(other_token).title == snapshot.title


def test_an_expiry_in_the_past_is_refused(store, snapshot):
    past = dataclasses.replace(snapshot, expires=datetime.now(UTC) - timedelta(minutes=1))
    assert "already passed" in message(store.publish, past)


def test_publishing_purges_expired_reports(url, store, snapshot, monkeypatch):
    soon = dataclasses.replace(snapshot, expires=datetime.now(UTC) + timedelta(hours=1))
    store.publish(soon)
    monkeypatch.setattr(rs, "_now", lambda: int(datetime.now(UTC).timestamp()) + 7200)
    store.publish(snapshot)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert len(conn.execute(select(REPORTS.c.token_hash)).all()) == 1
    engine.dispose()


# -- schema and configuration ------------------------------------------------------------------


def test_schema_is_versioned(url, store, snapshot):
    store.publish(snapshot)
    assert store.schema_version() == SCHEMA_VERSION == len(rs.MIGRATIONS)
    with ReportStore(url) as again:  # an up-to-date schema is left alone
        assert again.schema_version() == SCHEMA_VERSION
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(update(SCHEMA_TABLE).values(version=SCHEMA_VERSION + 1))
    engine.dispose()
    with ReportStore(url) as newer:
        assert "newer version of hte" in message(newer.open, new_token())


def test_default_url_and_environment(monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(rs.ENV_URL, raising=False)
    assert rs.default_url() == f"sqlite:///{(tmp_path / '.hte' / 'reports.db').as_posix()}"
    monkeypatch.setenv(rs.ENV_URL, f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with ReportStore() as store:
        assert store.backend == "sqlite"
        store.schema_version()
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / ".hte").exists()


def test_storage_failures_are_plain_messages():
    assert "not a database URL" in message(ReportStore, "not a url at all")
    assert "not a database URL" in message(ReportStore, "nosuchdb://x/y")
    down = ReportStore("postgresql+psycopg://user:s3cret-pw@127.0.0.1:1/db")
    text_ = message(down.open, new_token())
    assert text_ == UNAVAILABLE and "s3cret" not in repr(down)
    down.close()


def test_revoked_reports_leave_no_copy_in_the_sqlite_file(tmp_path: Path, snapshot):
    marker = "CANARY-REVOKED-5150"
    path = tmp_path / "reports.db"
    with ReportStore(f"sqlite:///{path}") as store:
        kept, _ = store.publish(snapshot)
        token, owner_key = store.publish(dataclasses.replace(snapshot, title=marker))

        def stored() -> bytes:
            return b"".join(p.read_bytes() for p in tmp_path.glob("reports.db*"))

        assert marker.encode() in stored()
        store.revoke(token, owner_key)
        assert marker.encode() not in stored()
        assert store.open(kept).title == snapshot.title


# -- limits, caching, housekeeping (issue 11) ------------------------------------------------


def test_limits_come_from_the_environment_with_a_sentence_for_bad_values():
    from hte.report_limits import ReportLimits

    limits = ReportLimits.from_env({"HTE_REPORT_MIN_CELL": "25", "HTE_REPORT_MAX_MB": "2.5",
                                    "HTE_PUBLISH_PER_HOUR": " 3 "})
    assert (limits.min_cell, limits.max_megabytes, limits.publishes_per_hour) == (25, 2.5, 3)
    assert limits.max_groups == ReportLimits().max_groups  # unset: the default
    with pytest.raises(ReportError, match="HTE_REPORT_MIN_CELL must be a whole number"):
        ReportLimits.from_env({"HTE_REPORT_MIN_CELL": "ten"})
    with pytest.raises(ReportError, match="HTE_REPORT_MIN_CELL must be a positive number"):
        ReportLimits.from_env({"HTE_REPORT_MIN_CELL": "0"})


def test_publish_enforces_the_servers_floor_for_k_whatever_the_caller(url, gaussian_fit):
    from hte.report_limits import ReportLimits

    with ReportStore(url, limits=ReportLimits(min_cell=30)) as store:
        low = Snapshot.from_fit(gaussian_fit, min_cell=5, max_draws=20)
        assert "at least 30 people in each arm" in message(store.publish, low)
        ok = Snapshot.from_fit(gaussian_fit, min_cell=30, max_draws=20)
        token, _ = store.publish(ok)
        assert store.open(token).min_cell == 30
        # A snapshot put together by hand with a small arm is refused, not published.
        groups = ok.groups.copy()
        groups.loc[1, "n_treated"] = 3
        forged = dataclasses.replace(ok, groups=groups, draws=ok.draws)
        assert "fewer than 30 people in one arm" in message(store.publish, forged)


def test_publish_caps_size_groups_and_text(url, snapshot):
    from hte.report_limits import ReportLimits

    with ReportStore(url, limits=ReportLimits(max_megabytes=0.01)) as store:
        assert "MB this server allows" in message(store.publish, snapshot)
    with ReportStore(url, limits=ReportLimits(max_groups=3)) as store:
        assert f"has {len(snapshot.groups):,} groups" in message(store.publish, snapshot)
    with ReportStore(url, limits=ReportLimits(max_note=5, max_title=400)) as store:
        assert "note is too long" in message(store.publish, snapshot)  # the note has 18
        long_title = dataclasses.replace(snapshot, title="x" * 350, draws=snapshot.draws)
        with ReportStore(url, limits=ReportLimits(max_title=300)) as strict:
            assert "title is too long" in message(strict.publish, long_title)


def test_publish_rate_is_limited_per_session(url, snapshot):
    from hte.report_limits import PublishRate, ReportLimits

    with ReportStore(url, limits=ReportLimits(publishes_per_hour=2)) as store:
        store.publish(snapshot, publisher="session-a")
        store.publish(snapshot, publisher="session-a")
        assert "published 2 reports in the last hour" in message(
            store.publish, snapshot, "session-a")
        store.publish(snapshot, publisher="session-b")  # another session is not held back
    clock = [0.0]
    rate = PublishRate(1, clock=lambda: clock[0])
    rate.take("s")
    with pytest.raises(ReportError, match="about 60 minutes"):
        rate.take("s")
    clock[0] = 3600.5  # the hour has slid past
    rate.take("s")


def test_the_published_fingerprint_is_keyed_with_the_owner_key(store, snapshot):
    fingerprint = snapshot.data["fingerprint"]
    token, owner_key = store.publish(snapshot)
    shown = store.open(token).data["fingerprint"]
    assert fingerprint not in shown and shown.startswith("hmac-sha256:")
    assert shown == rs.keyed_fingerprint(fingerprint, owner_key)  # the owner can match it
    assert shown != rs.keyed_fingerprint(fingerprint, new_token())
    assert snapshot.data["fingerprint"] == fingerprint  # publishing leaves the snapshot as it was


def test_report_views_are_cached_but_revocation_and_expiry_are_seen_at_once(url, snapshot,
                                                                              monkeypatch):
    from hte.report_limits import ReportLimits

    with ReportStore(url, limits=ReportLimits(cache_seconds=300)) as store:
        token, owner_key = store.publish(snapshot)
        reads = []
        real = Snapshot.from_payload
        monkeypatch.setattr(Snapshot, "from_payload",
                            classmethod(lambda cls, *a: reads.append(1) or real(*a)))
        first = store.open(token)
        assert store.open(token) is first and len(reads) == 1  # read and decompressed once
        assert store.status(token) is None  # never expires
        store.revoke(token, owner_key)
        assert message(store.open, token) == INVALID_LINK
        # Expiry is checked on every view, even of a cached report.
        soon = dataclasses.replace(snapshot, expires=datetime.now(UTC) + timedelta(hours=1),
                                   draws=snapshot.draws)
        token, _ = store.publish(soon)
        store.open(token)
        with store._engine.begin() as conn:
            conn.execute(update(REPORTS).values(expires=1))
        assert message(store.open, token) == INVALID_LINK
    with ReportStore(url, limits=ReportLimits(cache_seconds=0)) as store:
        token, _ = store.publish(snapshot)
        assert store.open(token) is not store.open(token)  # caching off


def test_expired_reports_are_purged_when_reports_are_opened(url, snapshot):
    with ReportStore(url) as store:
        token, _ = store.publish(snapshot)
        old, _ = store.publish(snapshot)
        with store._engine.begin() as conn:
            conn.execute(update(REPORTS).where(REPORTS.c.token_hash == rs.token_hash(old))
                         .values(expires=1))
        store._purged -= store.PURGE_EVERY + 1  # as if the last purge was long ago
        store.open(token)
        with store._engine.connect() as conn:
            assert conn.execute(select(REPORTS.c.token_hash)).scalars().all() == [
                rs.token_hash(token)]


def test_mysql_gets_columns_that_hold_large_reports():
    from sqlalchemy.dialects import mysql
    from sqlalchemy.schema import CreateTable

    ddl = str(CreateTable(REPORTS).compile(dialect=mysql.dialect()))
    assert "meta LONGTEXT" in ddl and "payload LONGBLOB" in ddl
    assert "LONG" not in str(CreateTable(REPORTS).compile(
        dialect=__import__("sqlalchemy.dialects.postgresql").dialects.postgresql.dialect()))
