"""Starting and stopping a whole engine: Ray, Redis, the shard actors, history, the ingest
handlers and the HTTP API."""

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import ray
import redis

from access import keyring
from access.auth import KeyStore
from access.tokens import DEFAULT_TTL_S, DeviceTokens, SigningKeys
from actors.cell_shard import CellShard
from actors.history import History, HistoryConfig
from actors.hooks import DeliveryConfig
from actors.ingest import start_handler
from actors.space_shard import SpaceShard
from actors.user_shard import UserShard
from clients import cluster
from clients.definitions import Definitions
from clients.history import NAME as HISTORY
from clients.refs import alive_nodes, on_node
from occupancy import local_files
from occupancy.http_ingress import serve_env, wait_serving
from occupancy.settings import Settings
from occupancy.tls import check as check_tls
from occupancy.tls import record_trust
from state import id_directory, redis_client
from state.layout import current
from state.private_files import private_dir
from state.redis_server import DURABILITY, EmbeddedRedis, external_warnings
from state.topology import Topology

log = logging.getLogger(__name__)

REMAINS_STOP_S = 120.0  # how long the remains of a lost engine may take to stop
RUNNING_CHECK_S = 30.0  # how long a running engine's history may take to answer


class EngineRunning(RuntimeError):
    """An engine already runs in the Ray namespace, owned by another `occupancy up`."""


def topology_for(s: Settings, redis_url: str) -> Topology:
    """The deployment's topology from its settings (the same for `up` and `serve deploy`)."""
    return Topology(
        redis_url=redis_url,
        spec=s.engine_spec().to_dict(),
        user_shards=tuple(f"user-{i}" for i in range(s.user_shards)),
        cell_shards=tuple(f"cell-{i}" for i in range(s.cell_shards)),
        space_shards=tuple(f"space-{i}" for i in range(s.space_shards)),
        checkpoint_interval_s=s.checkpoint_interval_s,
        rate_limits=(s.device_rate_limit, s.key_rate_limit),
        tls=s.tls().as_tuple(),
        audit_window_s=s.audit_window_s,
        hook_outbox_max=s.hook_outbox_max,
    )


def _refuse_a_second(ns: str) -> None:
    """Another `occupancy up` joining a running engine would take its actors (they are named)
    and, when it stopped, stop them all: the engine's owner is the first, whose actors die with
    it. A supervisor that starts `up` again after a failure relies on this: the engine is
    started once, whoever asks. Its history actor answering (or restarting) is the sign."""
    if cluster.answers(ns, HISTORY, RUNNING_CHECK_S):
        raise EngineRunning(
            f"an engine already runs in Ray namespace {ns!r} (its history actor answers): "
            "not starting another; stop that one first"
        )


def _stop_remains(ns: str) -> None:
    """Stops what is left of an engine whose `occupancy up` is gone, so that every actor starts
    again from Redis together.

    Ray stops the actors of a driver that died with it (a crash, or the loss of the head it
    ran on), but not the detached ones: the shards and handlers `occupancy scale` started
    outlive it, and, with GCS fault tolerance, so does the cluster. They hold handles to actors
    that are gone for good (a handler would send every batch to a user shard that no longer
    exists, a user shard its updates to a cell shard that another replaced, which never hears
    of its devices). The history actor is the sign: `occupancy up` starts it, so a namespace
    with named actors and no history holds only such remains. An engine that runs was refused
    before this (`_refuse_a_second`)."""
    names = cluster.named(ns)
    if not names or HISTORY in names:
        return
    log.warning(
        "%s outlived the `occupancy up` that started the engine: stopping them; every actor "
        "starts again from Redis",
        ", ".join(sorted(names)),
    )
    cluster.stop(ns, names)
    cluster.wait_gone(ns, names, REMAINS_STOP_S)


def _history_placement(s: Settings) -> dict:
    """With embedded ClickHouse (chDB), history runs on this node, the one `occupancy up` runs
    on (the head in every config here): its store is a folder of the data dir on this
    machine's disk, and only one process may open it. Placed by Ray alone it landed on a
    worker node here: it would write its store on that machine, and after that node's loss
    come back elsewhere with an empty one. With a ClickHouse server (OCC_CLICKHOUSE_URL) any
    node will do."""
    if s.clickhouse_url:
        return {}
    return {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}}


@contextlib.contextmanager
def _working_dir_of_nothing(empty: Path):
    """Ray puts the driver's working directory on every worker's `sys.path`, in front of the
    installed packages: started from a folder holding `clickhouse/` or `engine/` (a data dir,
    a checkout), workers would import those. The driver joins Ray from `empty`, a folder that
    holds nothing and stays (local workers keep it as their own working directory)."""
    here = os.getcwd()
    empty.mkdir(parents=True, exist_ok=True)
    os.chdir(empty)
    try:
        yield
    finally:
        os.chdir(here)


@dataclass
class Engine:
    """A running engine. `start()` is idempotent per process; `stop()` undoes it."""

    settings: Settings
    serve_api: bool = True  # False: the HTTP API comes from `serve deploy` or a RayService
    topology: Topology | None = None
    grpc_port: int = 0
    osmand_port: int = -1  # -1: off
    http_port: int = 0
    _serve: bool = False
    redis_url: str = ""
    _redis: EmbeddedRedis | None = None
    _actors: list = field(default_factory=list)
    _owns_ray: bool = False
    _owns_namespace: bool = False  # False until no other engine was found running in it

    def start(self) -> "Engine":
        try:
            return self._start()
        except BaseException:
            # nothing half-started outlives a failed start (Redis, Ray, actors)
            self.stop()
            raise

    def _start(self) -> "Engine":
        s = self.settings
        s.check_embedded()  # the embedded Redis or ClickHouse without the `embedded` extra
        keyring.use(local_files.secret(s))  # a placeholder or a short secret starts nothing
        tls = check_tls(s.tls())  # files that do not load start nothing either
        self.settings = s = s.model_copy(
            update={"tls_cert": tls.cert, "tls_key": tls.key, "tls_client_ca": tls.client_ca}
        )
        private_dir(s.data_dir)
        record_trust(s.data_dir, tls, s.tls_ca)  # how this data dir's CLI reaches the engine
        env = serve_env(  # checks the mode
            s.http_ingress, s.data_dir / local_files.HAPROXY_SUBDIR, tls.cert, tls.key
        )
        if s.durability not in DURABILITY:
            raise ValueError(f"OCC_DURABILITY must be one of {', '.join(DURABILITY)}")
        actor_env = local_files.secret_for_actors(s)
        secret = s.secret.get_secret_value()
        if secret and os.environ.get(keyring.SECRET_ENV) != secret:
            raise keyring.BadSecret(
                "a secret given in the settings must be OCC_SECRET in the environment too: "
                "the actors read it from there"
            )
        if os.environ.get("RAY_ADDRESS") and not (s.secret or s.secret_file):
            log.warning(
                "the secret was generated in %s: actors on other machines cannot read it; set "
                "OCC_SECRET or OCC_SECRET_FILE for `ray start` on every node",
                actor_env[keyring.SECRET_FILE_ENV],
            )
        local_files.rename_old_folders(s.data_dir)
        if s.redis_url:
            self.redis_url = s.redis_url
            for warning in external_warnings(redis_client.connect(s.redis_url), s.durability):
                log.warning("%s", warning)
        else:
            self._redis = EmbeddedRedis(s.data_dir, durability=s.durability)
            self.redis_url = self._redis.start()
        # shard counts come from the settings until a rebalance has committed a layout
        self.topology = current(topology_for(s, self.redis_url))
        # an id directory from before pseudonyms were random: raw -> pseudonym, before ingest
        added = id_directory.migrate(self.client())
        if added:
            log.warning("id directory: %d raw ids given their recorded pseudonyms", added)
        if not ray.is_initialized():
            if not os.environ.get("RAY_ADDRESS"):
                for k, v in env.items():
                    os.environ.setdefault(k, v)
            with _working_dir_of_nothing((s.data_dir / local_files.WORKDIR).resolve()):
                ray.init(
                    address=os.environ.get("RAY_ADDRESS") or None,
                    namespace=self.topology.namespace,
                    include_dashboard=False,
                    object_store_memory=None if os.environ.get("RAY_ADDRESS") else 256 << 20,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    # every actor and replica of the job (and what they start) reads it
                    runtime_env={"env_vars": actor_env} if actor_env else None,
                )
            self._owns_ray = True
        t = self.topology
        ns = t.namespace
        _refuse_a_second(ns)
        self._owns_namespace = True
        SigningKeys(self.client()).current()  # there is a key to sign device tokens with
        _stop_remains(ns)
        nodes = alive_nodes()
        shards = [
            *((UserShard, n) for n in t.user_shards),
            *((CellShard, n) for n in t.cell_shards),
            *((SpaceShard, n) for n in t.space_shards),
        ]
        for i, (cls, name) in enumerate(shards):  # round-robin over the nodes
            options = on_node(nodes, i)
            self._actors.append(
                cls.options(name=name, namespace=ns, get_if_exists=True, **options).remote(name, t)
            )
        # every shard is up (its __init__ done) before history and ingest open
        cluster.ready(self._actors)
        config = HistoryConfig(
            clickhouse_url=s.clickhouse_url,
            data_dir=str(s.data_dir.resolve()),
            snapshot_interval_s=s.snapshot_interval_s,
            raw_retention_days=s.raw_retention_days,
            aggregate_retention_days=s.aggregate_retention_days,
            audit_retention_days=s.audit_retention_days,
            archive_backlog_max_mb=s.archive_backlog_max_mb,
            lake_url=s.lake(),
            lake_retention_days=s.lake_retention_days,
            hooks=DeliveryConfig(
                s.hook_backoff_base_s, s.hook_backoff_cap_s, s.hook_give_up_s, s.hook_outbox_max
            ),
        )
        history = History.options(
            name=HISTORY, namespace=ns, get_if_exists=True, **_history_placement(s)
        ).remote(t, config)
        self._actors.append(history)
        cluster.ready([history])
        # ingest handlers share one port (SO_REUSEPORT): the kernel spreads connections
        port, osmand = s.grpc_port, s.osmand_port
        for i in range(max(1, s.ingest_handlers)):
            handler, port = start_handler(t, i, port, nice=s.ingest_nice, osmand_port=osmand)
            self._actors.append(handler)
            osmand = cluster.IngestHandlers.osmand_port(handler)  # a free one is now bound
        self.grpc_port, self.osmand_port = port, osmand
        if self.serve_api:
            self._start_api()
        return self

    def _start_api(self) -> None:
        from ray import serve
        from ray.serve import RunTarget

        from serve_apps.api import STREAM_PREFIX, build, build_streams

        self._serve = True  # from here on, stop() shuts Serve down
        s = self.settings
        http = {"host": "0.0.0.0", "port": s.http_port}
        if s.tls_cert and s.http_ingress != "haproxy":  # HAProxy's TLS is in its configuration
            http |= {"ssl_certfile": s.tls_cert, "ssl_keyfile": s.tls_key}
        serve.start(http_options=http)
        streams = build_streams(self.topology, s.k_min, s.stream_heartbeat_s)
        serve.run_many(  # deployed together: their replicas start side by side
            [
                RunTarget(build(self.topology, s.k_min), name="api", route_prefix="/"),
                RunTarget(streams, name="stream", route_prefix=STREAM_PREFIX),
            ]
        )
        self.http_port = s.http_port
        if s.http_port and not wait_serving(s.http_port, tls=bool(s.tls_cert)):
            log.warning("the HTTP port %d does not answer from the API yet", s.http_port)

    def write_targets(self, path) -> None:
        """The HTTP endpoints serving the API now, as JSON written atomically to `path`: the
        replicas under direct ingress (for file-based discovery in a load balancer): those of the
        API (route prefix /) and of the live streams (/v1/stream)."""
        import orjson

        from occupancy.http_ingress import replica_targets

        try:
            targets = replica_targets("api") + replica_targets("stream", proxies=False)
        except Exception as exc:  # the controller is restarting: keep the previous file
            log.warning("HTTP targets unavailable: %s", exc)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(targets, option=orjson.OPT_INDENT_2))
        tmp.replace(path)

    def stop(self) -> None:
        if self._serve:
            from ray import serve

            with contextlib.suppress(Exception):
                serve.shutdown()
            self._serve = False
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors.clear()
        if ray.is_initialized() and self.topology is not None and self._owns_namespace:
            # shards and handlers a rebalance or a scale-out started are detached: stop them too
            ns = self.topology.namespace
            with contextlib.suppress(Exception):
                cluster.stop(ns, cluster.named(ns))
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        if self._redis is not None:
            self._redis.stop()

    # -- credentials and definitions ------------------------------------------------------------

    def client(self) -> redis.Redis:
        return redis_client.connect(self.redis_url)

    def create_key(self, role: str, label: str = "") -> str:
        return KeyStore(self.client()).create(role, label)

    def device_token(self, device_id: str, ttl_s: float = DEFAULT_TTL_S) -> str:
        return DeviceTokens(self.client(), local_files.secret(self.settings)).issue(
            device_id, ttl_s
        )[0]

    def definitions(self) -> Definitions:
        return Definitions(self.topology)

    def define_polygon_space(self, space: str, polygon: dict, name: str = "") -> int:
        return asyncio.run(self.definitions().define_polygon_space(space, polygon, name))

    def define_door_space(self, space: str, name: str = "") -> None:
        asyncio.run(self.definitions().define_door_space(space, name))

    def define_doorway(self, doorway: str, inside: str, outside: str | None) -> None:
        asyncio.run(self.definitions().define_doorway(doorway, inside, outside))

    def install(self, sensor: str, doorway: str | None, start: int, positive: str) -> None:
        asyncio.run(self.definitions().install(sensor, doorway, start, positive))

    def reset(self, space: str, at: int) -> None:
        asyncio.run(self.definitions().reset(space, at))
