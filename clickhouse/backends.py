"""Two ways to reach ClickHouse with the same SQL: embedded chDB or a server.

Both take ClickHouse's own query parameters (`{name:Type}` in the SQL, values apart), so user
input never becomes SQL text. Table and column names come from this package only.
"""

import re
import threading
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Protocol

import orjson
import pyarrow as pa

from clickhouse.arrow_block import arrow_block, arrow_type

DATABASE = "occupancy"
_TOKEN = re.compile(r"^[\w:.\-]{1,200}$")


class Backend(Protocol):
    def execute(self, sql: str, params: dict | None = None) -> None: ...

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]: ...

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence], token: str = ""
    ) -> None: ...

    def insert_columns(
        self,
        table: str,
        columns: Sequence[str],
        data: Sequence[Sequence],
        token: str = "",
        block: pa.Table | None = None,
    ) -> None:
        """`data` holds one sequence per column (all of one length): the faster form; `block`,
        the same as an Arrow table if the caller built one (chDB reads it as it is)."""
        ...

    def raw(self, sql: str, params: dict, fmt: str) -> bytes:
        """The result in one of ClickHouse's output formats (CSVWithNames, Parquet, ...)."""
        ...

    def close(self) -> None: ...


def _check_token(token: str) -> str:
    if token and not _TOKEN.match(token):
        raise ValueError(f"bad insert dedup token {token!r}")
    return token


class NoChdb(ImportError):
    """Embedded ClickHouse asked for where chdb is not installed."""


def _escaped(params: dict | None) -> dict:
    """Query parameters as chDB takes them: it reads each value as ClickHouse's escaped text (a
    server reads them so too, and clickhouse-connect escapes them), so a tab or a newline in a
    string would end it (an error) and a backslash start an escape sequence (another value)."""
    return {
        name: value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        if isinstance(value, str)
        else value
        for name, value in (params or {}).items()
    }


class ChdbBackend:
    """The ClickHouse engine in this process, on a data dir that only this process may open.

    One query at a time: a chDB session is not safe to share between threads. Two queries at
    once lose each other's parameters ("Substitution `x` is not set"), and an insert that reads
    an Arrow block back from Python waits for the GIL while a query in another thread holds it
    waiting for chDB, for good. Every call goes through `_query`, under one lock, and so
    does `_failed`, which clears what a failed query left (see `_query`).

    chdb comes with the `embedded` extra and is imported only here (NoChdb without it)."""

    def __init__(self, path: Path):
        try:
            from chdb import session
        except ImportError as exc:
            raise NoChdb(
                "the embedded ClickHouse needs chdb, which is not installed: pip install "
                "'occupancy[embedded]', or set OCC_CLICKHOUSE_URL to a server of your own"
            ) from exc
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.session = session.Session(str(path))
        self._query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        self._query(f"USE {DATABASE}")
        self._types: dict[str, dict[str, object]] = {}  # table -> column -> Arrow type

    def _query(self, sql: str, fmt: str = "CSV", params: dict | None = None):
        """One query on the session. chDB (4.4) keeps what a query that fails while it runs
        (out of time, `throwIf`, out of memory) had written and hands it to the session's next
        query ahead of that query's own result: a JSON answer that cannot be parsed, a CSV or
        Parquet export with a stranger's rows in front. So a failure is followed by a query that
        takes what was left, under the lock that lets no other query in between."""
        with self._lock:
            try:
                return self.session.query(sql, fmt, params=_escaped(params))
            except Exception:
                self._failed()
                raise

    def _failed(self) -> None:
        with suppress(Exception):
            self.session.query("SELECT 1", "Null")

    def execute(self, sql: str, params: dict | None = None) -> None:
        self._types.clear()  # a migration may have changed a table
        self._query(sql, "Null", params)

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        result = self._query(
            sql + " SETTINGS output_format_json_quote_64bit_integers = 0", "JSONCompact", params
        )
        data = result.bytes()
        return [tuple(r) for r in orjson.loads(data)["data"]] if data else []

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence], token: str = ""
    ) -> None:
        if rows:
            self.insert_columns(table, columns, list(zip(*rows, strict=True)), token)

    def insert_columns(
        self,
        table: str,
        columns: Sequence[str],
        data: Sequence[Sequence],
        token: str = "",
        block: pa.Table | None = None,
    ) -> None:
        if not data or not len(data[0]):
            return
        settings = ""
        if token:
            settings = f" SETTINGS insert_deduplication_token = '{_check_token(token)}'"
        head = f"INSERT INTO {table} ({', '.join(columns)}){settings}"
        types = [self._column_types(table).get(c) for c in columns]
        if block is None or block.schema.types != types:  # none given, or not the table's types
            block = arrow_block(columns, data, types)
        if block is not None:
            # Arrow columns: ClickHouse reads them as they are, with no text to parse (about
            # half the CPU of the JSON below for raw pings)
            with self._lock:  # chDB reads `block` by its name from this frame
                try:
                    self.session.query(f"{head} SELECT * FROM Python(block)")
                except Exception:
                    self._failed()
                    raise
            return
        # one JSON array per column: ~3x the rows/s of a JSON array per row (orjson does it in C)
        text = orjson.dumps(list(data)).decode()
        self._query(f"{head} FORMAT JSONCompactColumns\n{text}")

    def _column_types(self, table: str) -> dict:
        found = self._types.get(table)
        if found is None:
            rows = self.rows(
                "SELECT name, type FROM system.columns"
                " WHERE database = currentDatabase() AND table = {t:String}",
                {"t": table},
            )
            found = self._types[table] = {name: arrow_type(kind) for name, kind in rows}
        return found

    def raw(self, sql: str, params: dict, fmt: str) -> bytes:
        return self._query(sql, fmt, params).bytes()

    def close(self) -> None:
        with self._lock:
            self.session.close()


class ServerBackend:
    """A ClickHouse server through clickhouse-connect (HTTP), e.g.
    `http://user:password@host:8123/occupancy`."""

    def __init__(self, url: str):
        import clickhouse_connect

        # no server session: history's threads query at once, and ClickHouse refuses a second
        # query in a session that runs one (nothing here needs session state)
        options = {"autogenerate_session_id": False}
        self.client = clickhouse_connect.get_client(dsn=url, **options)
        if not self.client.database or self.client.database == "default":
            self.client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
            self.client = clickhouse_connect.get_client(dsn=url, database=DATABASE, **options)

    def execute(self, sql: str, params: dict | None = None) -> None:
        self.client.command(sql, parameters=params)

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        return [tuple(r) for r in self.client.query(sql, parameters=params).result_rows]

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence], token: str = ""
    ) -> None:
        if not rows:
            return
        settings = {"insert_deduplication_token": _check_token(token)} if token else {}
        self.client.insert(table, list(rows), column_names=list(columns), settings=settings)

    def insert_columns(
        self,
        table: str,
        columns: Sequence[str],
        data: Sequence[Sequence],
        token: str = "",
        block: pa.Table | None = None,  # the client sends the columns as they are
    ) -> None:
        if not data or not len(data[0]):
            return
        settings = {"insert_deduplication_token": _check_token(token)} if token else {}
        self.client.insert(
            table,
            [list(c) for c in data],
            column_names=list(columns),
            column_oriented=True,
            settings=settings,
        )

    def raw(self, sql: str, params: dict, fmt: str) -> bytes:
        return self.client.raw_query(sql, parameters=params, fmt=fmt)

    def close(self) -> None:
        self.client.close()


class Unreachable:
    """A backend that refuses every call as a store that is down would (no ClickHouse answer,
    so nothing is taken for a refused row): what an outage drill puts in place of the real one,
    which `real` keeps."""

    def __init__(self, real: Backend):
        self.real = real

    def _down(self, *args, **kwargs):
        raise ConnectionRefusedError("ClickHouse unreachable (outage drill)")

    execute = rows = insert = insert_columns = raw = _down

    def close(self) -> None:
        self.real.close()


# a name no Python package can have: a data dir used as the working directory shadows nothing
CHDB_SUBDIR = "clickhouse-data"


def connect(url: str, data_dir: Path) -> Backend:
    """A server backend for `url`, else chDB in `data_dir / "clickhouse-data"`."""
    return ServerBackend(url) if url else ChdbBackend(data_dir / CHDB_SUBDIR)
