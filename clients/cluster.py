"""The cluster's own actors and nodes: actors just started, named actors, the gRPC ingest
handlers, each node's free memory and the Serve controller. Blocking calls, for drivers and
threads (the runtime, a scale)."""

import contextlib
import threading
import time

import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from clients.errors import NotStarted, mapped


def _get(refs, timeout_s: float | None = None):
    try:
        return ray.get(refs, timeout=timeout_s)
    except Exception as exc:
        engine = mapped(exc)
        if engine is exc:
            raise
        raise engine from exc


def ready(handles: list) -> None:
    """Wait until every actor just created has run its `__init__` (it answers `pid`)."""
    _get([h.pid.remote() for h in handles])


def answers(namespace: str, name: str, timeout_s: float) -> bool:
    """Whether the named actor is alive: it answers within `timeout_s`, or is restarting (an
    actor whose owner died is dead, not restarting). False when no actor has the name or the
    one that has it died."""
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    try:
        ray.get(handle.pid.remote(), timeout=timeout_s)
    except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return True  # restarting: Ray brings it back for the owner it still has
    except ray.exceptions.RayActorError:  # died
        return False
    return True


def named(namespace: str) -> list[str]:
    """The names of the namespace's named actors."""
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
    ]


def stop(namespace: str, names: list[str]) -> None:
    """Stop the named actors for good (Ray does not restart them); gone ones are skipped."""
    for name in names:
        with contextlib.suppress(ValueError):  # gone meanwhile
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)


def wait_gone(namespace: str, names: list[str], timeout_s: float) -> None:
    """Until no actor has any of `names` (a name is free once its actor is gone)."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            try:
                ray.get_actor(name, namespace=namespace)
            except ValueError:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not stop within {timeout_s:.0f} s")
            time.sleep(0.1)


class IngestHandlers:
    """The gRPC ingest handlers `ingest-<i>` of a namespace."""

    def __init__(self, namespace: str):
        self.namespace = namespace

    def names(self) -> list[str]:
        names = (n for n in named(self.namespace) if n.startswith("ingest-"))
        return sorted(names, key=lambda n: int(n.split("-")[1]))

    def _handle(self, name: str):
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError as exc:
            raise NotStarted(f"no actor {name} runs (yet)") from exc

    def options(self, name: str) -> dict:
        return _get(self._handle(name).options.remote())

    def rss(self, names: list[str], timeout_s: float = 30) -> list[int]:
        return _get([self._handle(n).rss.remote() for n in names], timeout_s)

    def stop(self, name: str) -> None:
        """The handler lets its calls finish, then goes for good."""
        handle = self._handle(name)
        _get(handle.stop.remote())
        ray.kill(handle, no_restart=True)

    @staticmethod
    def bound_port(handle) -> int:
        """The port a handler just created bound (once it serves)."""
        return _get(handle.bound_port.remote())

    @staticmethod
    def osmand_port(handle) -> int:
        """The OsmAnd port a handler just created serves (-1: none)."""
        return _get(handle.bound_osmand_port.remote())

    @staticmethod
    def serve_in_thread(handle) -> None:
        """A handler's call to its own `serve`, from a thread of its own (its __init__ must
        return before the call runs)."""
        threading.Thread(target=lambda: ray.get(handle.serve.remote()), daemon=True).start()


@ray.remote(num_cpus=0)
def _available_here() -> int:
    return psutil.virtual_memory().available


def available_bytes() -> int:
    """The memory available on every alive node, summed (one small task per node)."""
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    tasks = [
        _available_here.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        ).remote()
        for node in nodes
    ]
    return sum(_get(tasks, 30))


def serve_instance_details() -> dict:
    """The Serve controller's view of the applications (their replicas and targets)."""
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    return ray.get(controller.get_serve_instance_details.remote())
