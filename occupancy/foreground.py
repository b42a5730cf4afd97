"""An engine run in the foreground (`occupancy up`, `occupancy demo`): start, print where it
listens, run until Ctrl-C or SIGTERM, stop cleanly."""

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

from occupancy import local_files
from occupancy.runtime import Engine
from occupancy.settings import Settings
from state.redis_client import redact


@contextmanager
def running_engine(
    settings: Settings, console: Console, serve_api: bool = True
) -> Iterator[tuple[Engine, str]]:
    """The started engine and its bootstrap admin key; stopped on leaving."""
    engine = Engine(settings, serve_api=serve_api)
    with console.status("starting Ray, Redis, ClickHouse and the shard actors…"):
        engine.start()
    try:
        store = local_files.key_store(settings, "admin")
        admin = local_files.bootstrap_key(settings, engine.client(), "admin", store)
        console.print(f"[bold green]occupancy engine up[/] · data dir {settings.data_dir}")
        s = engine.settings  # TLS file paths resolved
        tls = " over TLS" + (", mutual" if s.tls_client_ca else "") if s.tls_cert else ""
        console.print(
            f"  gRPC ingest   127.0.0.1:{engine.grpc_port} (occupancy.v1.IngestService{tls})"
        )
        scheme = "https" if s.tls_cert else "http"
        if engine.osmand_port >= 0:
            console.print(
                f"  OsmAnd ingest {scheme}://127.0.0.1:{engine.osmand_port} (Traccar Client)"
            )
        if serve_api:
            console.print(
                f"  HTTP API      {scheme}://127.0.0.1:{engine.http_port} (OpenAPI at /docs; "
                f"ingress {settings.http_ingress})"
            )
        if s.tls_ca:
            console.print(f"  TLS CA        {s.tls_ca} (what clients trust)")
        else:
            console.print("  HTTP API      not started here (serve deploy serve_apps/config.yaml)")
        console.print(f"  Redis         {redact(engine.redis_url)}")
        console.print(
            f"  shards        {len(engine.topology.user_shards)} user, "
            f"{len(engine.topology.cell_shards)} cell, "
            f"{len(engine.topology.space_shards)} space"
        )
        # the key stays where it is kept: this output goes to logs (`nohup ... > up.log`, a
        # Ray job's driver log)
        console.print(f"  admin key     in {store.where()}")
        if serve_api:
            targets = settings.data_dir / "targets.json"
            console.print(
                f"  HTTP targets  {targets} (the replicas, for an external load balancer)"
            )
        yield engine, admin
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        with console.status("stopping…"):
            engine.stop()
        console.print("stopped")


def run_until_stopped(
    engine: Engine,
    settings: Settings,
    every_5s: Callable[[], None] | None = None,
) -> None:
    """Block until Ctrl-C or SIGTERM, writing the HTTP targets file (and calling `every_5s`)
    every 5 s."""
    stop = []
    # handled here rather than as KeyboardInterrupt: also when the shell that started us in the
    # background made it ignore SIGINT, and never in the middle of a call to the engine
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    targets = settings.data_dir / "targets.json"
    last = 0.0
    while not stop:
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            if engine.serve_api:
                engine.write_targets(targets)
            if every_5s is not None:
                every_5s()
        time.sleep(0.25)
