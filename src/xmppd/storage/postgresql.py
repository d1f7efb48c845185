"""PostgreSQL storage on an asyncpg connection pool: the durable data of a cluster.

    storage = PostgreSQLStorage("postgresql://xmppd:secret@db.example:5432/xmppd?pool_max=10")

The URL is libpq's (``postgresql://`` or ``postgres://``, a database name required); its
query parameters go to asyncpg (``sslmode=require``...), except the ones xmppd reads itself
(:data:`POOL_PARAMETERS`): ``pool_min``/``pool_max`` (connections kept / at most, default 1
and 10), ``connect_timeout`` and ``command_timeout`` (seconds, default 10 and 60).
``asyncpg`` is imported only when such a URL is opened (``pip install 'xmppd[postgresql]'``).

Every write is committed (``synchronous_commit`` as the server has it, on by default) before
its coroutine returns.  Archive appends started in one event-loop iteration are written by
one statement (:func:`~xmppd.storage.postgresql_stores.append_batch`) and their futures
resolved after its commit; one batch is in flight at a time, so items appended later
always get larger ``seq``s.

Failures: no connection at :meth:`open` raises :class:`StorageError` naming the URL without
its password; a connection lost later makes the operations that needed it raise
:class:`StorageError`, and the pool connects again on the next operation once PostgreSQL
is back.  A write that failed that way may or may not have committed (it was never
acknowledged).

Schema: :data:`MIGRATIONS`, applied by ``open()`` under an advisory lock (several servers
of a cluster may start at once), recorded in ``schema_version``.  The tables are the SQLite
backend's (:mod:`xmppd.storage.sqlite_stores` describes them) with text columns in the "C"
collation, so that keys, owners and accounts sort by code point as there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from xmppd.storage.base import AccountExists, Storage, StorageError, check_credentials
from xmppd.storage.credentials import ScramCredentials
from xmppd.storage.postgresql_stores import (
    PostgreSQLArchiveStore,
    PostgreSQLKeyValueStore,
    append_batch,
    delete_user_rows,
    namespaces_of,
    rowcount,
)
from xmppd.storage.stores import (
    Append,
    ArchiveStore,
    KeyValueStore,
    check_kind,
    check_user_owner,
    settle_appends,
)

__all__ = ["MIGRATIONS", "POOL_PARAMETERS", "PoolOptions", "PostgreSQLStorage",
           "parse_url", "redact_url"]

SCHEMES = ("postgresql", "postgres")

#: Appends written by one statement at most (the rest wait for the next one).
MAX_BATCH = 1000

#: Held (transaction-scoped) while the schema is created or migrated.
_SCHEMA_LOCK = 0x786D7070_64000001

_TEXT = 'TEXT COLLATE "C" NOT NULL'

#: Forward migrations; migration ``n`` (1-based) brings the schema to version ``n``.
#: Never edit one that has shipped: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: accounts and their SCRAM credentials; the generic per-module stores
    (
        f"""CREATE TABLE accounts (
            domain {_TEXT},
            username {_TEXT},
            created_at BIGINT NOT NULL,
            disabled BOOLEAN NOT NULL DEFAULT FALSE,
            PRIMARY KEY (domain, username)
        )""",
        f"""CREATE TABLE scram_credentials (
            domain {_TEXT},
            username {_TEXT},
            hash_name {_TEXT},
            salt BYTEA NOT NULL,
            iterations INTEGER NOT NULL CHECK (iterations >= 4096),
            stored_key BYTEA NOT NULL,
            server_key BYTEA NOT NULL,
            PRIMARY KEY (domain, username, hash_name),
            FOREIGN KEY (domain, username) REFERENCES accounts (domain, username)
                ON DELETE CASCADE
        )""",
        f"""CREATE TABLE kv (
            ns {_TEXT},
            owner {_TEXT},
            key {_TEXT},
            value TEXT NOT NULL,
            PRIMARY KEY (ns, owner, key)
        )""",
        f"""CREATE TABLE archive (
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            ns {_TEXT},
            owner {_TEXT},
            id {_TEXT},
            stamp DOUBLE PRECISION NOT NULL,
            with_jid {_TEXT},
            data BYTEA NOT NULL,
            -- Not a key on seq alone: the planner would walk it for "ORDER BY seq LIMIT n",
            -- filtering, past every other owner's newer rows.
            CONSTRAINT archive_by_owner PRIMARY KEY (ns, owner, seq)
        )""",
        "CREATE UNIQUE INDEX archive_by_id ON archive (ns, owner, id)",
        "CREATE INDEX archive_by_with ON archive (ns, owner, with_jid, seq)",
        "CREATE INDEX archive_by_owner_stamp ON archive (ns, owner, stamp) INCLUDE (seq)",
        "CREATE INDEX archive_by_stamp ON archive (ns, stamp)",
        f"""CREATE TABLE archive_counts (
            ns {_TEXT},
            owner {_TEXT},
            n BIGINT NOT NULL,
            PRIMARY KEY (ns, owner)
        )""",
        f"""CREATE TABLE store_versions (
            ns {_TEXT} PRIMARY KEY,
            version INTEGER NOT NULL
        )""",
    ),
)


@dataclass(frozen=True)
class PoolOptions:
    """The URL query parameters xmppd reads (see the module docstring)."""

    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = 10.0
    command_timeout: float = 60.0


#: Query parameters taken out of the URL for the pool, with their types.
POOL_PARAMETERS: dict[str, type] = {"pool_min": int, "pool_max": int,
                                    "connect_timeout": float, "command_timeout": float}


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def parse_url(url: str) -> tuple[str, PoolOptions]:
    """Check a PostgreSQL URL's shape; returns (the DSN for asyncpg, the pool options).

    Raises ``ValueError`` naming what is wrong (the password left out).
    """
    shown = redact_url(url)
    shape = "postgresql://[user[:password]@][host][:port]/database[?param=value...]"
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not url.startswith(parts.scheme + "://"):
        raise ValueError(f"a PostgreSQL URL is {shape}, got {shown!r}")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError(f"bad port in PostgreSQL URL {shown!r}") from None
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise ValueError(f"PostgreSQL URL {shown!r} needs a database name ({shape})")
    if parts.fragment:
        raise ValueError(f"PostgreSQL URL {shown!r} has a #fragment")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"bad query string in PostgreSQL URL {shown!r}") from None
    values = {}
    for name, value in query:
        kind = POOL_PARAMETERS.get(name)
        if kind is None:
            continue
        try:
            values[name] = number = kind(value)
        except ValueError:
            raise ValueError(f"PostgreSQL URL: {name}={value!r} is not a number") from None
        if not 0 <= number < 1e6 or (name != "pool_min" and number == 0):
            raise ValueError(f"PostgreSQL URL: {name}={value!r} is out of range")
    options = PoolOptions(**values)
    if options.pool_min > options.pool_max:
        raise ValueError(f"PostgreSQL URL: pool_min={options.pool_min} is more than"
                         f" pool_max={options.pool_max}")
    # The others go to asyncpg as written (urlunsplit would drop an empty "//" authority).
    passed = [p for p in parts.query.split("&") if p and p.partition("=")[0] not in POOL_PARAMETERS]
    dsn = url.partition("?")[0] + ("?" + "&".join(passed) if passed else "")
    return dsn, options


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError:
        raise StorageError("PostgreSQL storage needs asyncpg: pip install 'xmppd[postgresql]'"
                           ) from None
    return asyncpg


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__


class _WithoutTraceback(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect while PostgreSQL is
    down: an operator gets its one line (and the reason) instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"PostgreSQL: {record.getMessage()}: {_reason(record.exc_info[1])}"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


def _quiet_pool_log() -> None:
    logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _WithoutTraceback) for f in logger.filters):
        logger.addFilter(_WithoutTraceback())


class PostgreSQLStorage(Storage):
    """:class:`Storage` in a PostgreSQL database (see the module docstring)."""

    SCHEMA_VERSION = len(MIGRATIONS)

    def __init__(self, url: str) -> None:
        super().__init__()
        self._dsn, self.options = parse_url(url)
        #: The URL without its password: for messages and logs.
        self.name = redact_url(url)
        self._pool: Any = None
        self._closing = False
        #: archive appends started and not yet handed to a statement
        self._appends: list[Append] = []
        self._writer: asyncio.Task[None] | None = None
        #: statements of archive appends (each a batch of them)
        self.append_batches = 0

    def __repr__(self) -> str:
        return f"<PostgreSQLStorage {self.name}>"

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        asyncpg = _asyncpg()
        _quiet_pool_log()
        opts = self.options
        try:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=opts.pool_min, max_size=opts.pool_max,
                timeout=opts.connect_timeout, command_timeout=opts.command_timeout,
                # A plan per call: a generic plan cannot see that a time range holds a few
                # items of a big archive (planning these statements takes microseconds).
                server_settings={"plan_cache_mode": "force_custom_plan"},
            )
        except Exception as exc:  # refused, unknown host, bad password, no database...
            raise StorageError(f"cannot connect to PostgreSQL {self.name}: {_reason(exc)}"
                               ) from None
        try:
            async with pool.acquire() as conn:
                await self._migrate(conn)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, Exception) and not isinstance(exc, StorageError):
                raise self._error(exc) from None
            raise
        self._pool = pool
        self._closing = False

    async def close(self) -> None:
        pool = self._pool
        if pool is None:
            return
        self._closing = True  # new operations fail; appends started so far are written
        self._start_writer()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        self._pool = None
        try:
            await asyncio.wait_for(pool.close(), self.options.command_timeout)
        except (TimeoutError, Exception):  # PostgreSQL gone: nothing left to flush
            pool.terminate()

    async def _migrate(self, conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            current = await _version(conn)
            if current > len(MIGRATIONS):
                raise StorageError(f"PostgreSQL {self.name} has schema version {current};"
                                   f" this xmppd knows {len(MIGRATIONS)}")
            for number in range(current + 1, len(MIGRATIONS) + 1):
                for step in MIGRATIONS[number - 1]:
                    await conn.execute(step)
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    number, int(time.time()),
                )

    # -- connections and errors ---------------------------------------------------------

    def _error(self, exc: BaseException) -> Exception:
        """What a caller sees of an asyncpg or socket error."""
        asyncpg = sys.modules["asyncpg"]
        if isinstance(exc, (asyncpg.CharacterNotInRepertoireError,
                            asyncpg.UntranslatableCharacterError)):
            return ValueError(f"PostgreSQL cannot store this text: {_reason(exc)}")
        if isinstance(exc, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                            asyncpg.exceptions.OperatorInterventionError)):
            return StorageError(f"PostgreSQL {self.name} unavailable: {_reason(exc)}")
        return StorageError(f"PostgreSQL {self.name}: {_reason(exc)}")

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn asyncpg's and the socket's errors into :class:`StorageError` (and text
        PostgreSQL cannot hold into ``ValueError``); ours pass through."""
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            asyncpg = sys.modules.get("asyncpg")
            if isinstance(exc, OSError) or (asyncpg is not None and isinstance(
                    exc, (asyncpg.PostgresError, asyncpg.InterfaceError))):
                raise self._error(exc) from None
            raise

    @staticmethod
    async def _in_task() -> None:
        """Suspend once when run eagerly (:mod:`xmppd.eager`: not in a task yet), so that
        asyncpg, which needs the current task (``asyncio.timeout`` when it connects), runs
        in the task that resumes us.  Every operation waits for the network anyway."""
        if asyncio.current_task() is None:
            await asyncio.sleep(0)

    @property
    def pool(self) -> Any:
        """The open pool; :class:`StorageError` while closed."""
        if self._pool is None or self._closing:
            raise StorageError("storage is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def transaction(self, kind: str = "write") -> Any:
        """A connection in a transaction, committed on exit; errors as :meth:`errors`."""
        await self._in_task()
        started = time.perf_counter()
        try:
            with self.errors():
                async with self.pool.acquire() as conn, conn.transaction():
                    yield conn
        finally:
            self.latency.observe(kind, time.perf_counter() - started)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """One statement's rows (one implicit transaction)."""
        await self._in_task()
        started = time.perf_counter()
        try:
            with self.errors():
                return await self.pool.fetch(sql, *args)
        finally:
            self.latency.observe("read", time.perf_counter() - started)

    async def fetchval(self, sql: str, *args: Any, kind: str = "read") -> Any:
        """One statement's first value (``kind="write"`` for a write: it commits)."""
        await self._in_task()
        started = time.perf_counter()
        try:
            with self.errors():
                return await self.pool.fetchval(sql, *args)
        finally:
            self.latency.observe(kind, time.perf_counter() - started)

    async def execute(self, sql: str, *args: Any) -> int:
        """One write statement, committed; returns the rows it affected."""
        await self._in_task()
        started = time.perf_counter()
        try:
            with self.errors():
                status = await self.pool.execute(sql, *args)
        finally:
            self.latency.observe("write", time.perf_counter() - started)
        return rowcount(status)

    # -- batched archive appends ----------------------------------------------------------

    def append(self, append: Append) -> asyncio.Future[Any]:
        """Queue an archive append for the next batch; returns its future."""
        if self._pool is None or self._closing:
            append.future.set_exception(StorageError("storage is not open"))
            return append.future
        if not self._appends:
            append.future.get_loop().call_soon(self._start_writer)
        self._appends.append(append)
        return append.future

    def _start_writer(self) -> None:
        if self._writer is None and self._appends:
            self._writer = asyncio.get_running_loop().create_task(self._write_appends())

    async def _write_appends(self) -> None:
        """Write the queued appends, a batch per statement, until none is left."""
        try:
            while self._appends:
                batch, self._appends = self._appends[:MAX_BATCH], self._appends[MAX_BATCH:]
                started = time.perf_counter()
                try:
                    with self.errors():
                        async with self._pool.acquire() as conn:
                            outcomes = await append_batch(conn, batch)
                except Exception as exc:  # the whole batch failed (nothing acknowledged)
                    outcomes = [exc] * len(batch)
                self.append_batches += 1
                self.latency.observe("append_batch", time.perf_counter() - started)
                settle_appends(batch, outcomes)
        finally:
            self._writer = None
            if self._appends and self._pool is None:  # pragma: no cover - cancelled at exit
                settle_appends(self._appends, [StorageError("storage closed")] * len(
                    self._appends))
                self._appends = []

    # -- maintenance --------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self.transaction("read") as conn:
            return await _version(conn)

    # -- accounts -------------------------------------------------------------------------

    async def create_account(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> None:
        check_credentials(creds)
        async with self.transaction() as conn:
            created = await conn.fetchval(
                "INSERT INTO accounts (domain, username, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING TRUE",
                domain, username, int(time.time()),
            )
            if not created:
                raise AccountExists(f"{username}@{domain}")
            await _insert_creds(conn, username, domain, list(creds.values()))

    async def delete_account(self, username: str, domain: str) -> bool:
        owner = check_user_owner(f"{username}@{domain}")
        async with self.transaction() as conn:
            status = await conn.execute(  # credentials: ON DELETE CASCADE
                "DELETE FROM accounts WHERE domain = $1 AND username = $2", domain, username
            )
            await delete_user_rows(conn, owner)  # per-module stores, in the same transaction
        return rowcount(status) > 0

    async def set_credentials(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> bool:
        check_credentials(creds)
        async with self.transaction() as conn:
            exists = await conn.fetchval(  # locked: a concurrent delete waits for us
                "SELECT TRUE FROM accounts WHERE domain = $1 AND username = $2 FOR UPDATE",
                domain, username,
            )
            if not exists:
                return False
            await conn.execute(
                "DELETE FROM scram_credentials WHERE domain = $1 AND username = $2",
                domain, username,
            )
            await _insert_creds(conn, username, domain, list(creds.values()))
        return True

    async def get_scram(
        self, username: str, domain: str, hash_name: str
    ) -> ScramCredentials | None:
        rows = await self.fetch(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials"
            " WHERE domain = $1 AND username = $2 AND hash_name = $3",
            domain, username, hash_name,
        )
        return ScramCredentials(hash_name, *rows[0]) if rows else None

    async def account_exists(self, username: str, domain: str) -> bool:
        return bool(await self.fetchval(
            "SELECT TRUE FROM accounts WHERE domain = $1 AND username = $2", domain, username
        ))

    async def set_disabled(self, username: str, domain: str, disabled: bool) -> bool:
        return await self.execute(
            "UPDATE accounts SET disabled = $1 WHERE domain = $2 AND username = $3",
            bool(disabled), domain, username,
        ) > 0

    async def account_disabled(self, username: str, domain: str) -> bool:
        # Asked at every login; not cached here (another server of the cluster may change it).
        return bool(await self.fetchval(
            "SELECT disabled FROM accounts WHERE domain = $1 AND username = $2",
            domain, username,
        ))

    async def list_accounts(self, domain: str | None = None) -> list[tuple[str, str]]:
        if domain is None:
            rows = await self.fetch(
                "SELECT username, domain FROM accounts ORDER BY domain, username")
        else:
            rows = await self.fetch(
                "SELECT username, domain FROM accounts WHERE domain = $1 ORDER BY username",
                domain,
            )
        return [(r[0], r[1]) for r in rows]

    # -- per-module stores --------------------------------------------------------------

    def _new_store(self, namespace: str, kind: str) -> KeyValueStore | ArchiveStore:
        if kind == "archive":
            return PostgreSQLArchiveStore(self, namespace)
        return PostgreSQLKeyValueStore(self, namespace)

    async def delete_user_data(self, owner: str) -> None:
        check_user_owner(owner)
        async with self.transaction() as conn:
            await delete_user_rows(conn, owner)

    async def namespaces(self, kind: str) -> list[str]:
        table = "archive" if check_kind(kind) == "archive" else "kv"
        async with self.transaction("read") as conn:
            return await namespaces_of(conn, table)

    async def store_versions(self) -> dict[str, int]:
        rows = await self.fetch("SELECT ns, version FROM store_versions ORDER BY ns")
        return {r[0]: r[1] for r in rows}



async def _version(conn: Any) -> int:
    return await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")


async def _insert_creds(
    conn: Any, username: str, domain: str, creds: list[ScramCredentials]
) -> None:
    await conn.executemany(
        "INSERT INTO scram_credentials (domain, username, hash_name, salt, iterations,"
        " stored_key, server_key) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(domain, username, c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key)
         for c in creds],
    )
