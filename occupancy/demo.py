"""`occupancy demo`: the engine on its embedded defaults, the demo city's spaces, simulated fleets
streamed through the real gRPC API, and the live heatmap page."""

import os
import threading
import time
import webbrowser

from rich.console import Console

from occupancy import local_files
from occupancy.api_client import ApiClient, ApiError
from occupancy.foreground import run_until_stopped, running_engine
from occupancy.runtime import Engine
from occupancy.settings import Settings
from occupancy.simulate_grpc import DOOR_SENSORS, Simulation, Totals
from occupancy.simulator import demo_spaces

# fine enough for each mall section to be a space of several cells; the page rolls the city up
DEMO_RES = 11
DEMO_DATA_DIR = ".occupancy/demo"  # its own data dir: a different base resolution than `up`'s


def demo_settings(env: dict[str, str] | None = None) -> Settings:
    """`OCC_*` settings, with the demo's own data dir and resolution unless they are set."""
    env = dict(os.environ if env is None else env)
    env.setdefault("OCC_DATA_DIR", DEMO_DATA_DIR)
    env.setdefault("OCC_H3_RES", str(DEMO_RES))
    return Settings.from_env(env)


def define_places(engine: Engine) -> list[str]:
    """The city's districts and the mall's sections as polygon spaces; a building and its
    meeting room as door spaces with a counter at each door. Idempotent."""
    for space, (name, polygon) in demo_spaces().items():
        engine.define_polygon_space(space, polygon, name)
    engine.define_door_space("hq", "HQ floor (doors)")
    engine.define_door_space("hq-meeting", "HQ meeting room (doors)")
    engine.define_doorway("hq-front", inside="hq", outside=None)
    engine.define_doorway("hq-back", inside="hq", outside=None)
    engine.define_doorway("hq-meeting-door", inside="hq-meeting", outside="hq")
    # the door sensors are installed when the demo first runs; a rerun finds them in place
    installed = engine.definitions().metadata.door_counter()
    first = int(time.time() * 1000) - 60_000
    for sensor, doorway, positive in (
        ("hq-front-1", "hq-front", "in"),
        ("hq-back-1", "hq-back", "out"),  # mounted the other way round
        ("hq-meeting-door", "hq-meeting-door", "in"),
    ):
        if not installed.installations(sensor):
            engine.install(sensor, doorway, first, positive)
    return [*demo_spaces(), "hq", "hq-meeting"]


def _summary(api: ApiClient, totals: Totals, started: float) -> str:
    try:
        top = api.get("/v1/top", timeout=5, n=1)
        spaces = api.get("/v1/spaces", timeout=5)["spaces"]
    except (ApiError, KeyError):
        return f"{time.monotonic() - started:5.0f} s  {totals.line()}"
    busiest = top["cells"][0] if top.get("cells") else {"cell": "-", "count": 0}
    counts = {s["space"]: s["count"] for s in spaces}
    return (
        f"{time.monotonic() - started:5.0f} s  sent {totals.sent:,}  accepted {totals.accepted:,}"
        f"  busiest cell {busiest['cell']} ({busiest['count']})"
        f"  food court {counts.get('mall-food-court', 0)}  HQ floor {counts.get('hq', 0)}"
    )


def run(
    console: Console,
    devices: int,
    interval_s: float,
    duration_s: float | None,
    door_rate: float = 2.0,
    open_browser: bool = False,
    settings: Settings | None = None,
) -> None:
    """Run until Ctrl-C; the fleets stop after `duration_s` (None: never), the page stays."""
    settings = settings or demo_settings()
    with running_engine(settings, console) as (engine, admin):
        define_places(engine)
        viewer = local_files.bootstrap_key(settings, engine.client(), "viewer")
        api = f"http://127.0.0.1:{engine.http_port}"
        client = ApiClient(api, admin, settings)
        sim = Simulation(
            f"127.0.0.1:{engine.grpc_port}",
            admin,
            devices,
            interval_s,
            door_rate,
            tls_ca=False,
            settings=settings,
        )
        stop = threading.Event()
        started = time.monotonic()

        def simulate() -> None:
            try:
                sim.run(duration_s, stop)
            except Exception as exc:  # the engine is stopping, or ingest refused us
                if not stop.is_set():
                    console.print(f"[red]simulation stopped: {exc}[/]")
                return
            if not stop.is_set():
                console.print(f"simulation finished: {sim.totals.line()}")

        thread = threading.Thread(target=simulate, name="simulate", daemon=True)
        thread.start()
        url = f"{api}/#key={viewer}"
        console.print(
            f"simulating {devices:,} devices (cars, buses on route 304, shoppers; a ping every "
            f"{interval_s:g} s) and {len(DOOR_SENSORS)} door counters"
        )
        console.print(f"[bold]live page[/]     {url}")
        console.print(f"  try           OCC_DATA_DIR={settings.data_dir} .venv/bin/occupancy top")
        console.print("Ctrl-C stops it.")
        if open_browser:
            webbrowser.open(url)
        try:
            run_until_stopped(
                engine, settings, lambda: console.print(_summary(client, sim.totals, started))
            )
        finally:
            stop.set()
            thread.join(timeout=10)
            sim.close()
