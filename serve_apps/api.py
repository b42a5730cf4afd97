"""The HTTP API on Ray Serve: the deployments that give each replica its clients of the engine
(`QueryApi` for every route, `StreamApi` for the live streams)."""

import os

from ray import serve

from access import keyring
from access.auth import Authenticator
from clients.definitions import Definitions
from clients.ingest import IngestFront
from clients.queries import LiveQueries
from clients.refs import clients_for
from cluster import scale_job
from observability import telemetry, tracing
from observability.audit import AuditWriter
from serve_apps.app import make_app
from serve_apps.audit import AuditTrail
from serve_apps.context import ApiContext, install
from serve_apps.guard import Guard
from serve_apps.routes.stream import PATH
from serve_apps.timing import QueryTiming
from state import redis_client
from state.hooks import HookStore
from state.id_directory import IdDirectory
from state.topology import Topology

STREAMS = 2_000  # open streams a stream replica holds (each: a queue and a socket)
STREAM_PREFIX = PATH
LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

app = make_app()


def _replica(topology: Topology, k_min: int, heartbeat_s: float = 15.0) -> ApiContext:
    """What a replica of either deployment installs: its clients of the engine, the key
    look-up (a revocation reaches it within a second), the audit writer, timing and traces."""
    client = redis_client.connect(topology.redis_url)
    auth = Authenticator(client, keyring.process_secret())
    # one layout shared by every family's client, followed from Redis within a second
    engine = clients_for(topology)
    api = ApiContext(
        topology=topology,
        spec=topology.engine_spec(),
        k_min=k_min,
        queries=LiveQueries(topology, engine),
        history=engine.history,
        users=engine.users,
        definitions=Definitions(topology),
        redis=client,
        auth=auth,
        ids=IdDirectory(client),
        scaler=Scaler(topology),
        ingest=IngestFront(topology.namespace),
        hooks=HookStore(client),
        follow=lambda on_change: auth.follow(
            redis_client.connect_async(topology.redis_url), on_change
        ),
        heartbeat_s=heartbeat_s,
    )
    install(api)
    Guard.use(api.credential, api.sender)
    AuditTrail.writer = AuditWriter(topology.redis_url, topology.audit_window_s)
    process = f"api-{os.getpid()}"
    QueryTiming.tracer = tracing.tracer(process, topology.redis_url)
    QueryTiming.latency = telemetry.meter(process, topology.redis_url).create_histogram(
        "occupancy_query_seconds",
        unit="s",
        description="Query latency by endpoint (in the replica, HTTP stack excluded)",
        explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
    )
    return api


class _Replica:
    async def __del__(self) -> None:
        """A graceful stop (Serve scales in or redeploys): the audit records not written yet
        go to Redis."""
        if AuditTrail.writer is not None:
            await AuditTrail.writer.close()


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    max_ongoing_requests=64,
)
@serve.ingress(app)
class QueryApi(_Replica):
    """A replica: every query fans out once per shard family and merges (engine code); viewers
    get the privacy floor, admins exact counts and raw device ids. Each replica is a process
    of its own, so the context it installs is the one its routes see."""

    def __init__(self, topology: Topology, k_min: int = 0):
        self.api = _replica(topology, k_min)


@serve.deployment(ray_actor_options={"num_cpus": 0}, num_replicas=1, max_ongoing_requests=STREAMS)
@serve.ingress(app)
class StreamApi(_Replica):
    """The replica of `GET /v1/stream` (the app `stream`, route prefix /v1/stream): Serve counts
    an open stream as an ongoing request for its whole life, so streams have slots of their
    own (`max_ongoing_requests`: the streams a replica holds) and never take those queries
    need. One poller here feeds every stream (serve_apps/streams.py)."""

    def __init__(self, topology: Topology, k_min: int = 0, heartbeat_s: float = 15.0):
        self.api = _replica(topology, k_min, heartbeat_s)


def build(topology: Topology, k_min: int = 0):
    """The Serve application (`serve.run(build(...))`)."""
    return QueryApi.bind(topology, k_min)


def build_streams(topology: Topology, k_min: int = 0, heartbeat_s: float = 15.0):
    """The streams' Serve application, run beside the API's under the route prefix
    `STREAM_PREFIX` (`serve.run(build_streams(...), name="stream", route_prefix=...)`)."""
    return StreamApi.bind(topology, k_min, heartbeat_s)


class Scaler:
    """cluster/scale_job for the scale route (a shard that does not answer the pricing raises
    `clients.errors.Unavailable`)."""

    def __init__(self, topology: Topology):
        self.topology = topology

    def begin(self, user_shards, cell_shards, ingest_handlers) -> scale_job.Job:
        return scale_job.begin(self.topology, user_shards, cell_shards, ingest_handlers)

    @staticmethod
    def run(job: scale_job.Job) -> None:
        scale_job.run(job)
