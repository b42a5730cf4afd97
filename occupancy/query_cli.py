"""`occupancy top|heatmap|dwell|space|series|status|deadletter|archive|audit`: the HTTP API from the
command line, as tables or JSON (`occupancy scale` is in occupancy/scale_cli.py)."""

import json
import time

import click
from rich.table import Table

from occupancy import terminal
from occupancy.api_client import ApiClient
from occupancy.settings import Settings


def api_options(f):
    f = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")(f)
    f = click.option(
        "--key",
        envvar="OCC_API_KEY",
        default=None,
        help="API key (default: the data dir's admin key).",
    )(f)
    f = click.option("--url", default=None, help="API base URL (default: local OCC_HTTP_PORT).")(f)
    return f


def show(body: dict, as_json: bool, title: str, columns: list[str], rows: list[list]) -> None:
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c in ("count", "seconds") else "left")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    terminal.console().print(table)


@click.command()
@click.option("-n", default=10, show_default=True, help="How many cells.")
@click.option("--res", type=int, default=None, help="H3 resolution (default: the base one).")
@click.option("--bbox", default=None, help="minLng,minLat,maxLng,maxLat")
@api_options
def top(n: int, res: int | None, bbox: str | None, url, key, as_json) -> None:
    """The busiest cells now."""
    body = ApiClient(url, key, Settings.from_env()).get("/v1/top", n=n, res=res, bbox=bbox)
    rows = [[i + 1, c["cell"], c["count"]] for i, c in enumerate(body["cells"])]
    show(body, as_json, f"top {n} at res {body['res']}", ["#", "cell", "count"], rows)


@click.command()
@click.argument("bbox")
@click.option("--res", type=int, default=None, help="H3 resolution (default: the base one).")
@api_options
def heatmap(bbox: str, res: int | None, url, key, as_json) -> None:
    """Counts of every occupied cell in BBOX (minLng,minLat,maxLng,maxLat)."""
    body = ApiClient(url, key, Settings.from_env()).get("/v1/heatmap", bbox=bbox, res=res)
    rows = [[c["cell"], c["count"]] for c in body["cells"]]
    show(body, as_json, f"{len(rows)} cells at res {body['res']}", ["cell", "count"], rows)


@click.command()
@click.argument("device_id")
@click.option("--day", required=True, help="UTC day, YYYY-MM-DD.")
@api_options
def dwell(device_id: str, day: str, url, key, as_json) -> None:
    """Seconds DEVICE_ID spent per cell and space on a UTC day (admin)."""
    body = ApiClient(url, key, Settings.from_env()).get(f"/v1/users/{device_id}/dwell", day=day)
    rows = [["space", s["space"], s["seconds"]] for s in body["spaces"]]
    rows += [["cell", c["cell"], c["seconds"]] for c in body["cells"]]
    show(body, as_json, f"dwell of {device_id} on {day}", ["kind", "place", "seconds"], rows)


@click.command()
@click.argument("space_id")
@click.option("--at", default=None, help="A past time (ISO 8601 or ms); door spaces only for now.")
@api_options
def space(space_id: str, at: str | None, url, key, as_json) -> None:
    """The count of a polygon or door space."""
    body = ApiClient(url, key, Settings.from_env()).get(f"/v1/spaces/{space_id}", at=at)
    show(
        body,
        as_json,
        f"space {space_id}",
        ["space", "kind", "count", "as of (UTC)"],
        [[body["space"], body["kind"], body["count"], _utc(body["as_of"])]],
    )


@click.command()
@click.argument("place")
@click.option(
    "--step",
    type=click.Choice(["1m", "5m", "15m", "1h", "1d"]),
    default="1h",
    show_default=True,
    help="The buckets' length (1d: daily footfall).",
)
@click.option("--from", "start", default=None, help="ISO 8601 or ms (default: 24 h ago).")
@click.option("--to", "end", default=None, help="ISO 8601 or ms (default: now).")
@click.option(
    "--tz",
    default="UTC",
    show_default=True,
    help="The IANA time zone buckets align to (Area/City).",
)
@click.option("--by", default=None, help="An attribute K: one series per value (attr.K).")
@click.option("--cell", "is_cell", is_flag=True, help="PLACE is an H3 cell (hex), not a space.")
@api_options
def series(place: str, step: str, start, end, tz: str, by, is_cell, url, key, as_json) -> None:
    """Counts of PLACE (a space id, or an H3 cell in hex) per bucket: devices present at
    some instant of each, or a door space's count at its end with its entries and exits."""
    now = int(time.time() * 1000)
    params = {"step": step, "tz": tz, "from": start or str(now - 86_400_000), "to": end or str(now)}
    if by:
        params["by"] = by if by.startswith("attr.") else f"attr.{by}"
    params["cell" if is_cell else "space"] = place
    body = ApiClient(url, key, Settings.from_env()).get("/v1/series", **params)
    title = f"{place} per {step} ({tz})"
    if "series" in body:
        values = [s["value"] for s in body["series"]]
        columns = [f"start ({tz})", *("(none)" if v is None else str(v) for v in values)]
        times = sorted({p["t"] for s in body["series"] for p in s["points"]})
        counts = {
            (i, p["t"]): p["count"] for i, s in enumerate(body["series"]) for p in s["points"]
        }
        rows = [
            [_local(t, tz), *(counts.get((i, t), 0) for i in range(len(values)))] for t in times
        ]
        show(body, as_json, title, columns, rows)
        return
    door = body["kind"] == "door"
    columns = [f"start ({tz})", "count", *(("in", "out") if door else ())]
    rows = [
        [_local(p["t"], tz), p["count"], *((p["in"], p["out"]) if door else ())]
        for p in body["points"]
    ]
    show(body, as_json, title, columns, rows)


def _local(ms: int, tz: str) -> str:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .astimezone(ZoneInfo(tz))
        .strftime("%Y-%m-%d %H:%M %z")
    )


def scale_step(record: dict) -> str:
    """The step a scale is at (a `rebalance` record of the status), with the handoff's figures."""
    step = record["step"] or "starting"
    if step == "handoff" and record["shards_handed_off"]:
        step += f" ({record['shards_handed_off']} shards, {record['devices_moved']:,} devices)"
    return step


def scale_line(record: dict) -> str:
    """The last scale in one line: what it aimed at and how it went."""
    target = f"layout {record['target_version']}: {record['user_shards']} user and "
    target += f"{record['cell_shards']} cell shards"
    if record["ingest_handlers"] is not None:
        target += f", {record['ingest_handlers']} ingest handlers"
    state = record["state"]
    if state == "running":
        how = f"running, step {record['done'] + 1} of {record['total']}: {scale_step(record)}"
    elif state == "done":
        how = f"done at {_utc(record['finished_at'])} UTC"
    else:
        how = f"{state}: {record['error']}"
    return f"last scale (to {target}, started {_utc(record['started_at'])} UTC): {how}"


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


@click.command()
@api_options
def status(url, key, as_json) -> None:
    """Every shard's figures and the history snapshotter's state (admin)."""
    body = ApiClient(url, key, Settings.from_env()).get("/v1/admin/status")
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    layout = body["layout"]
    click.echo(
        f"layout {layout['version']}: {len(layout['user_shards'])} user, "
        f"{len(layout['cell_shards'])} cell, {len(layout['space_shards'])} space shards"
    )
    if "pending_layout" in body:
        p = body["pending_layout"]
        click.echo(
            f"unfinished rebalance to {len(p['user_shards'])} user and {len(p['cell_shards'])} "
            "cell shards: run `occupancy scale` with those counts to finish it"
        )
    if body.get("rebalance") is not None:
        click.echo(scale_line(body["rebalance"]))
    rows = [
        [
            s["shard"],
            s.get("error", "ok"),
            s.get("devices", ""),
            s.get("watermarks", s.get("tombstones", "")),
            s.get("wal_length", ""),
            s.get("epoch", ""),
            s.get("checkpoint_age_s", ""),
        ]
        for s in body["shards"]
    ]
    columns = [
        "shard", "state", "devices", "departed (watermarks/tombstones)", "log entries", "epoch",
        "checkpoint age s",
    ]  # fmt: skip
    show(body, False, "shards", columns, rows)
    h = body["history"]
    if "error" in h:
        click.echo(f"history: {h['error']}")
        return
    lag = max(h["archive_lag_ms"].values(), default=0) / 1000
    age = (body["as_of"] - h["last_snapshot_ms"]) / 1000 if h["last_snapshot_ms"] else None
    state = "paused" if h["paused"] else (f"error: {h['last_error']}" if h["last_error"] else "ok")
    if state == "ok" and h.get("catching_up"):
        state = "catching up"
    spill = h.get("spill", {"ranges": 0, "bytes": 0})
    rows = [
        ["state", state],
        ["snapshots", h["snapshots"]],
        ["last snapshot", "never" if age is None else f"{age:.1f} s ago"],
        ["archive lag (max)", f"{lag:.1f} s"],
        ["log entries not archived", sum(h["wal_backlog"].values())],
        ["backlog in Redis (est.)", f"{h.get('backlog_bytes', 0) / 2**20:.1f} MiB"],
        ["spilled to files", f"{spill['ranges']} ranges, {spill['bytes'] / 2**20:.1f} MiB"],
        ["refused blocks (dead letters)", h.get("deadletter", 0)],
        ["audit records waiting", h.get("audit_backlog", 0)],
    ]
    show(body, False, "history", ["", "value"], rows)


@click.command()
@click.option("--pause/--resume", default=None, help="Stop or resume writes to ClickHouse.")
@click.option(
    "--outage-drill",
    type=click.Choice(["on", "off"]),
    default=None,
    help="Rehearse a ClickHouse outage: every store call refused until off.",
)
@api_options
def archive(pause, outage_drill, url, key, as_json) -> None:
    """Pause or resume history's writes, or drill an outage (admin)."""
    body = {"paused": pause, "outage_drill": None if outage_drill is None else outage_drill == "on"}
    if pause is None and outage_drill is None:
        raise click.UsageError("give --pause, --resume or --outage-drill on|off")
    h = ApiClient(url, key, Settings.from_env()).post("/v1/admin/archive", body)
    if as_json or "error" in h:
        click.echo(json.dumps(h, indent=2))
        return
    click.echo(
        f"history: {'paused' if h['paused'] else 'writing'}; last error: "
        f"{h['last_error'] or 'none'}; spilled ranges: {h['spill']['ranges']}"
    )


@click.command()
@click.option("-n", "limit", default=20, show_default=True, help="How many, newest first.")
@api_options
def deadletter(limit: int, url, key, as_json) -> None:
    """What history refused: the table, the shard and log range, ClickHouse's error (admin)."""
    body = ApiClient(url, key, Settings.from_env()).get("/v1/admin/deadletter", limit=limit)
    rows = [
        [_utc(e["at"]), e["kind"], e["shard"], e["rows"], e["token"], e["error"][:80]]
        for e in body["entries"]
    ]
    columns = ["at (UTC)", "kind", "shard", "rows", "range", "error"]
    show(body, as_json, f"{body['total']} dead letters", columns, rows)


def _grpc_status(code: int) -> str:
    import grpc

    names = {c.value[0]: c.name for c in grpc.StatusCode}
    return names.get(code, str(code))


def audit_row(e: dict) -> list:
    """One audit record as a table row: who, what, how it went."""
    who = e["key_id"] or e["os_user"] or "-"
    what = f"{e['method']} {e['route']}".strip()
    status = _grpc_status(e["status"]) if e["source"] == "grpc" else e["status"]
    given = e["params"] if isinstance(e["params"], dict) else {"params": e["params"]}
    params = " ".join(f"{k}={'-' if v is None else v}" for k, v in given.items())
    if len(params) > 80:
        params = params[:79] + "…"
    calls = e["calls"] if e["calls"] != 1 else ""
    return [_utc(e["ts"]), e["source"], who, e["role"], what, params, status, calls,
            f"{e['duration_ms']:.1f}"]  # fmt: skip


@click.command()
@click.option(
    "--from", "start", default=None, help="Start time (ISO 8601 or ms; default: a day before --to)."
)
@click.option("--to", "end", default=None, help="End time, exclusive (default: now).")
@click.option("--key-id", default=None, help="Only the records of this API key id.")
@click.option("--route", default=None, help="Only routes starting with this (e.g. /v1/history).")
@click.option("-n", "--limit", default=100, show_default=True, help="How many, newest first.")
@api_options
def audit(start, end, key_id, route, limit, url, key, as_json) -> None:
    """Who asked what and when: the audit log, newest first (admin). Device ids appear as
    pseudonyms; refused requests and gRPC calls as counts per window ("calls")."""
    body = ApiClient(url, key, Settings.from_env()).get(
        "/v1/admin/audit",
        **{"from": start, "to": end, "key": key_id, "route": route, "limit": limit},
    )
    rows = [audit_row(e) for e in body["entries"]]
    columns = ["at (UTC)", "source", "key / user", "role", "request", "params", "status",
               "calls", "ms"]  # fmt: skip
    show(body, as_json, f"{len(rows)} audit records", columns, rows)
