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

DATABASE = "occupancy"
_TOKEN = re.compile(r"^[\w:.\-]{1,200}$")


class Backend(Protocol):
    def execute(self, sql: str, params: dict | None = None) -> None: ...

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]: ...

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence], token: str = ""
    ) -> None: ...

    def insert_columns(
        self, table: str, columns: Sequence[str], data: Sequence[Sequence], token: str = ""
    ) -> None:
        """`data` holds one sequence per column (all of one length): the faster form."""
        ...

    def raw(self, sql: str, params: dict, fmt: str) -> bytes:
        """The result in one of ClickHouse's output formats (CSVWithNames, Parquet, ...)."""
        ...

    def close(self) -> None: ...


def _check_token(token: str) -> str:
    if token and not _TOKEN.match(token):
        raise ValueError(f"bad insert dedup token {token!r}")
    return token


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

    Safe to call from several threads: chDB runs one query of a session at a time anyway."""

    def __init__(self, path: Path):
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self.session = session.Session(str(path))
        self._lock = threading.Lock()
        self._query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        self._query(f"USE {DATABASE}")

    def _query(self, sql: str, fmt: str = "CSV", params: dict | None = None):
        """One query on the session. chDB (4.4) keeps what a query that fails while it runs
        (out of time, `throwIf`, out of memory) had written and hands it to the session's next
        query ahead of that query's own result: a JSON answer that cannot be parsed, a CSV or
        Parquet export with a stranger's rows in front. So a failure is followed by a query that
        takes what was left, under a lock that lets no other query in between."""
        with self._lock:
            try:
                return self.session.query(sql, fmt, params=_escaped(params))
            except Exception:
                with suppress(Exception):
                    self.session.query("SELECT 1", "Null")
                raise

    def execute(self, sql: str, params: dict | None = None) -> None:
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
        self, table: str, columns: Sequence[str], data: Sequence[Sequence], token: str = ""
    ) -> None:
        if not data or not len(data[0]):
            return
        settings = ""
        if token:
            settings = f" SETTINGS insert_deduplication_token = '{_check_token(token)}'"
        # one JSON array per column: ~3x the rows/s of a JSON array per row (orjson does it in C)
        self._query(
            f"INSERT INTO {table} ({', '.join(columns)}){settings} FORMAT JSONCompactColumns\n"
            + orjson.dumps(list(data)).decode()
        )

    def raw(self, sql: str, params: dict, fmt: str) -> bytes:
        return self._query(sql, fmt, params).bytes()

    def close(self) -> None:
        self.session.close()


class ServerBackend:
    """A ClickHouse server through clickhouse-connect (HTTP), e.g.
    `http://user:password@host:8123/occupancy`."""

    def __init__(self, url: str):
        import clickhouse_connect

        self.client = clickhouse_connect.get_client(dsn=url)
        if not self.client.database or self.client.database == "default":
            self.client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
            self.client = clickhouse_connect.get_client(dsn=url, database=DATABASE)

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
        self, table: str, columns: Sequence[str], data: Sequence[Sequence], token: str = ""
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
