"""Named actors without Ray: `ray.get_actor` answers stand-in objects whose calls behave as Ray's
do (a coroutine per `.remote()`; an exception the object raises comes wrapped in RayTaskError,
a dead actor raises RayActorError), so the real clients run against them."""

import ray

from state.wal import pack


class Dead(Exception):
    """Raised by a stand-in to play an actor that died under the call."""


class _Method:
    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn

    def remote(self, *args) -> "_Ref":
        async def call():
            try:
                return self.fn(*args)
            except Dead:
                raise ray.exceptions.RayActorError() from None
            except Exception as exc:
                raise ray.exceptions.RayTaskError(
                    self.name, "", exc
                ).as_instanceof_cause() from None

        return _Ref(call)


class _Ref:
    """Like an ObjectRef: awaitable, and nothing runs (or warns) if nobody awaits it."""

    def __init__(self, run):
        self._run = run

    def __await__(self):
        return self._run().__await__()


class _Handle:
    def __init__(self, actor):
        self._actor = actor

    def __getattr__(self, name: str) -> _Method:
        return _Method(name, getattr(self._actor, name))


class Cluster:
    """Stand-in actors by name; `install(monkeypatch)` makes `ray.get_actor` find them."""

    def __init__(self, **actors):
        self.actors = dict(actors)

    def get_actor(self, name: str, namespace: str | None = None):
        if name not in self.actors:
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return _Handle(self.actors[name])

    def install(self, monkeypatch) -> "Cluster":
        monkeypatch.setattr(ray, "get_actor", self.get_actor)
        return self


class MemoryRedis:
    """The few Redis commands a process makes when it starts, over a dict."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value, nx: bool = False, **_):
        if nx and key in self.data:
            return False
        self.data[key] = value.encode() if isinstance(value, str) else value
        return True

    def commit_layout(self, layout: dict) -> None:
        from state.layout import COMMITTED

        self.data[COMMITTED] = pack(layout)

    def xrevrange(self, *args, **kwargs):
        return []

    def pipeline(self, transaction: bool = True):
        return _Pipeline()


class _Pipeline:
    def __init__(self):
        self.n = 0

    def hgetall(self, name):
        self.n += 1

    def execute(self):
        return [{} for _ in range(self.n)]
