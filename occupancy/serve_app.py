"""The application builder that `serve deploy serve_apps/config.yaml` imports (it reads the
settings, so it lives here and `serve_apps` never imports `occupancy`).

`occupancy up` runs the same `QueryApi` and `StreamApi` deployments; on a cluster, `occupancy up`
(or the cluster's start commands) creates the shard actors and `serve deploy` places the API
next to them.
"""

from occupancy.local_files import running_redis_url
from occupancy.runtime import topology_for
from occupancy.settings import Settings
from serve_apps.api import build, build_streams


def app_builder(args: dict):
    """`args` are Settings field names (data_dir, redis_url, k_min, ...); OCC_* variables fill
    in the rest. Without a Redis URL, the embedded server of the data dir must be running."""
    settings = Settings.from_env(**(args or {}))
    redis_url = settings.redis_url or running_redis_url(settings)
    return build(topology_for(settings, redis_url), settings.k_min)


def stream_builder(args: dict):
    """The live streams' application (`/v1/stream`), deployed beside the API's: the same
    `args`."""
    settings = Settings.from_env(**(args or {}))
    redis_url = settings.redis_url or running_redis_url(settings)
    topology = topology_for(settings, redis_url)
    return build_streams(topology, settings.k_min, settings.stream_heartbeat_s)
