"""The HTTP API on Ray Serve: the deployment that gives each replica its clients of the engine."""

import os

import ray
import redis
from ray import serve

from access import keyring
from access.auth import Authenticator
from clients.definitions import Definitions
from clients.errors import StateUnavailable, Unavailable
from clients.history import NAME as HISTORY
from clients.history import HistoryTimeout, HistoryUnavailable
from clients.queries import LiveQueries
from clients.refs import Shards
from cluster import scale_job
from observability import telemetry, tracing
from observability.audit import AuditWriter
from serve_apps.app import make_app
from serve_apps.audit import AuditTrail
from serve_apps.context import ApiContext, install
from serve_apps.guard import Guard
from serve_apps.timing import QueryTiming
from state import redis_client
from state.id_directory import IdDirectory
from state.topology import Topology

LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

app = make_app()


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    max_ongoing_requests=64,
)
@serve.ingress(app)
class QueryApi:
    """A replica: every query fans out once per shard family and merges (engine code); viewers
    get the privacy floor, admins exact counts and raw device ids. Each replica is a process
    of its own, so the context it installs is the one its routes see."""

    def __init__(self, topology: Topology, k_min: int = 0):
        client = redis_client.connect(topology.redis_url)
        # keys are checked here; a revocation reaches the replica within a second
        auth = Authenticator(client, keyring.process_secret())
        history, users = engine_clients(topology)
        self.api = ApiContext(
            topology=topology,
            spec=topology.engine_spec(),
            k_min=k_min,
            queries=LiveQueries(topology),
            history=history,
            users=users,
            definitions=Definitions(topology),
            redis=client,
            auth=auth,
            ids=IdDirectory(client),
            scaler=Scaler(topology),
            follow=lambda: auth.follow(redis_client.connect_async(topology.redis_url)),
        )
        install(self.api)
        Guard.use(self.api.credential)
        AuditTrail.writer = AuditWriter(topology.redis_url, topology.audit_window_s)
        process = f"api-{os.getpid()}"
        QueryTiming.tracer = tracing.tracer(process, topology.redis_url)
        QueryTiming.latency = telemetry.meter(process, topology.redis_url).create_histogram(
            "occupancy_query_seconds",
            unit="s",
            description="Query latency by endpoint (in the replica, HTTP stack excluded)",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )

    async def __del__(self) -> None:
        """A graceful stop (Serve scales in or redeploys): the audit records not written yet
        go to Redis."""
        if AuditTrail.writer is not None:
            await AuditTrail.writer.close()


def build(topology: Topology, k_min: int = 0):
    """The Serve application (`serve.run(build(...))`)."""
    return QueryApi.bind(topology, k_min)


class Scaler:
    """cluster/scale_job for the scale route; a shard that does not answer the pricing (a Ray
    error) is `Unavailable`."""

    def __init__(self, topology: Topology):
        self.topology = topology

    def begin(self, user_shards, cell_shards, ingest_handlers) -> scale_job.Job:
        try:
            return scale_job.begin(self.topology, user_shards, cell_shards, ingest_handlers)
        except ray.exceptions.RayError as exc:
            raise Unavailable(f"{type(exc).__name__}: a shard is restarting; retry") from exc

    @staticmethod
    def run(job: scale_job.Job) -> None:
        scale_job.run(job)


def engine_clients(topology: Topology) -> tuple:
    """The clients of the history actor and of the user shards (`clients.history.History`,
    `clients.shards.UserShards`); the actor adapters below until those exist."""
    try:
        from clients.history import History  # noqa: I001 (both or neither)
        from clients.shards import UserShards
    except ImportError:
        return _ActorHistory(topology), _ActorUserShards(topology)
    return History(topology), UserShards(topology)


# -- TEMPORARY: actor adapters standing in for clients.history.History and
# clients.shards.UserShards (same method names and arguments); removed once those exist --------


async def _translated(call):
    """An actor call's answer, Ray's errors as the engine's (clients/errors.py)."""
    try:
        return await call
    except (HistoryUnavailable, HistoryTimeout):
        raise
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, redis.RedisError):
            raise StateUnavailable(str(exc.cause)) from exc
        raise
    except ray.exceptions.RayActorError as exc:
        raise Unavailable(f"{type(exc).__name__}: restarting") from exc


class _ActorHistory:
    """TEMPORARY: `await history.heatmap(...)` calls the history actor's `heatmap`."""

    def __init__(self, topology: Topology):
        self._topology = topology
        self._actor = None

    def _handle(self):
        if self._actor is None:
            try:
                self._actor = ray.get_actor(HISTORY, namespace=self._topology.namespace)
            except ValueError as exc:  # not started yet
                raise Unavailable(str(exc)) from exc
        return self._actor

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args):
            return await _translated(getattr(self._handle(), method).remote(*args))

        return call


class _ActorUserShards:
    """TEMPORARY: the user shards' `forget`."""

    def __init__(self, topology: Topology):
        self._shards = Shards(topology)

    async def forget(self, shard: str, old: int, fresh: int) -> None:
        await _translated(self._shards.handle(shard).forget.remote(old, fresh))
