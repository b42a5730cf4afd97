"""UserShard: the source of truth for its devices' live state, with a Redis WAL."""

import asyncio
import dataclasses
import gc
import logging
import os
import threading
import time

import ray

from actors.hook_events import HookEvents
from clients.refs import ACTOR_OPTIONS, clients_for, start_ticker
from engine.record import PingRecord, is_pings
from engine.routing import route_cell_moves, route_space_moves
from engine.spec import EngineSpec
from engine.user import UserEngine
from observability import telemetry, tracing
from observability.telemetry import rss_bytes
from state import redis_client
from state.checkpoint import ForkedCheckpointer
from state.forgetting import IN_FLIGHT_MS, drop_forgotten
from state.instance import InstanceWatch
from state.layout import COMMITTED, StaleLayout, current, layout_of, with_layout
from state.metadata import Metadata
from state.topology import Clock, Topology
from state.wal import Wal, pack

log = logging.getLogger(__name__)

FREEZE_EVERY_S = 2.0
# devices a history export walks between two turns of the event loop (~3 µs each): ingest waits
# for one part, not for the whole walk
EXPORT_PART = 2_000


def _spec(topology: Topology, state: dict | None) -> EngineSpec:
    """The deployment's spec; a checkpoint's resolution and TTL win (the state is made of
    them), its limits and live windows follow the settings."""
    spec = topology.engine_spec()
    if state is None:
        return spec
    saved = EngineSpec.from_dict(state["spec"])
    if (saved.res, saved.ttl_ms) != (spec.res, spec.ttl_ms):
        log.warning(
            "checkpoint made with res %d and TTL %d ms: kept (settings say %d and %d ms)",
            saved.res, saved.ttl_ms, spec.res, spec.ttl_ms,
        )  # fmt: skip
    return dataclasses.replace(spec, res=saved.res, ttl_ms=saved.ttl_ms)


def _epoch_seq(epoch: int, seq: int) -> int:
    # a restarted shard's updates outrank its previous incarnation's at every receiver
    return (epoch << 32) | seq


@ray.remote(**ACTOR_OPTIONS)
class UserShard:
    """Hosts the logical actors of many devices (a `UserEngine`).

    Every batch is appended to the WAL before it is applied and acknowledged. A checkpoint
    (written by a forked child) stores the engine snapshot with the last applied WAL id and
    trims the WAL behind it. On (re)start: checkpoint, replay, then a full listing to every cell
    and space shard. Calls run one at a time on the actor's event loop; a thread calls `tick`
    to expire presence.

    A rebalance moves devices between user shards (`handoff` → `adopt`), each side writing
    what moved to its WAL; a batch routed by another layout version is refused (StaleLayout).
    """

    def __init__(self, name: str, topology: Topology):
        self.name = name
        client = redis_client.connect(topology.redis_url)
        self.topology = topology
        self.layout = layout_of(topology)
        self.shards = clients_for(topology, follow=False)  # the layout: `_use_layout`
        self._use_layout(layout_of(current(topology, client)))
        self.wal = Wal(client, name)
        self.metadata = Metadata(client)
        self.hooks = HookEvents(client, topology.hook_outbox_max)
        self.epoch = self.wal.next_epoch()
        state, self.wal_id = self.wal.load_checkpoint()
        self.engine = UserEngine(_spec(topology, state), state)
        if state and state.get("layout", {}).get("version", -1) > self.layout["version"]:
            self._use_layout(state["layout"])
        self.clock = Clock()
        self._handing_off = False
        self._exporting = asyncio.Lock()
        # forgotten pseudonyms -> until when their pings in flight are dropped (memory only)
        self._forgotten: dict[int, int] = {}
        replayed = 0
        for wal_id, entry in self.wal.entries_after(self.wal_id):
            self._apply(entry)
            self.wal_id = wal_id
            replayed += 1
        self.engine.use_spaces(self.metadata.polygon_spaces())
        self.engine.advance(self.clock())
        self.hooks.emit(self.engine.drain_moves()[1], self.clock.last)
        self._checkpointed_id = self.wal_id
        self._last_checkpoint = time.monotonic()
        self.checkpointer = ForkedCheckpointer(topology.redis_url, name)
        self._archiving = self.wal.archiving()
        self._observe(name)
        self.instance = InstanceWatch(client, name, lambda: self._redis_lost.add(1, self._labels))
        self.tracer = tracing.tracer(name, topology.redis_url)
        self._last_freeze = time.monotonic()
        self._resync()
        n = len(self.engine)
        log.info("%s epoch %d: %d devices, replayed %d WAL entries", name, self.epoch, n, replayed)
        self._stop = threading.Event()
        start_ticker(ray.get_runtime_context().current_actor, topology.tick_s, self._stop)

    def _observe(self, name: str) -> None:
        """Gauges read by the metrics reader's thread every few seconds."""
        from opentelemetry.metrics import Observation

        m = telemetry.meter(name, self.topology.redis_url)
        labels = self._labels = {"shard": name}
        self._redis_lost = m.create_counter(
            "occupancy_redis_lost_total",
            description="Times a shard found Redis emptied (flushed, or started without its "
            "files) and wrote its state again from memory",
        )
        self._redis_lost.add(0, labels)  # from the start, so that increase() sees the first one
        m.create_observable_gauge(
            "occupancy_shard_devices",
            callbacks=[lambda _: [Observation(len(self.engine), labels)]],
            description="Devices a shard holds",
        )
        m.create_observable_gauge(
            "occupancy_wal_entries",
            callbacks=[lambda _: [Observation(self.wal.length(), labels)]],
            description="Entries in a shard's write-ahead log (not yet checkpointed and archived)",
        )
        m.create_observable_gauge(
            "occupancy_shard_watermarks",
            callbacks=[lambda _: [Observation(self.engine.watermarks, labels)]],
            description="Devices a user shard evicted and remembers by a watermark",
        )
        self._evicted = m.create_counter(
            "occupancy_evicted_devices_total",
            description="Devices that left a user shard's memory (their history confirmed)",
        )
        m.create_observable_gauge(
            "occupancy_checkpoint_age_seconds",
            callbacks=[lambda _: [Observation(time.monotonic() - self._last_checkpoint, labels)]],
            description="Seconds since a shard's last checkpoint",
        )

    # -- ingest ---------------------------------------------------------------------------------

    async def ingest(self, batch: PingRecord) -> bytes:
        """Append to the WAL, apply, route the moves; b"\\x01" per applied ping, b"\\x00" late."""
        if batch.trace:  # a traced batch: this shard's span, carried on in its log entry
            parent = tracing.extract(batch.trace)
            with self.tracer.start_as_current_span("shard apply", context=parent) as span:
                span.set_attributes({"shard": self.name, "pings": len(batch)})
                batch.trace = tracing.carrier_of(span) or batch.trace
                return self._ingest(batch)
        return self._ingest(batch)

    def _ingest(self, batch: PingRecord) -> bytes:
        if batch.version is not None and batch.version != self.layout["version"]:
            raise StaleLayout(self.name, self.layout["version"])
        batch.now = self.clock()
        sent = len(batch)
        # pings still in flight under a pseudonym forgotten here: dropped before the log
        kept = drop_forgotten(batch, self._forgotten) if self._forgotten else None
        if kept is not None:
            batch = batch.take(kept)
            if not batch:
                return bytes(sent)
        wal_id = self.wal.append(batch.to_log())  # blocking on purpose: WAL order == apply order
        applied = self._apply(batch)
        self.wal_id = wal_id
        self._route()
        if kept is None:
            return bytes(applied)
        out = bytearray(sent)  # a dropped ping is acked as late: it changes nothing
        for i, ok in zip(kept, applied, strict=True):
            out[i] = ok
        return bytes(out)

    def _apply(self, entry: dict | PingRecord) -> list[bool]:
        if isinstance(entry, dict) and is_pings(entry):
            entry = PingRecord.from_log(entry)
        if isinstance(entry, PingRecord):
            self.clock.last = max(self.clock.last, entry.now)
            return self.engine.ingest(
                entry.dev, entry.ts, entry.cell, entry.lat, entry.lng, entry.now
            )
        now = entry["now"]
        self.clock.last = max(self.clock.last, now)
        # only replayed: the listing after a replay supersedes moves
        self.engine.drain_moves()
        control = entry["control"]
        if control == "adopt":
            self._absorb(entry["state"])
            return []
        if control == "forget":
            self.engine.forget(entry["device"], entry["fresh"], now)
            self._forgotten[entry["device"]] = now + IN_FLIGHT_MS
            return []
        if control == "handoff":
            if entry["layout"]["version"] > self.layout["version"]:
                self._use_layout(entry["layout"])
            self.engine.extract(entry["devices"])
        return []

    async def tick(self) -> None:
        self.engine.advance(self.clock())
        self._route()
        self.hooks.refresh()
        if self._forgotten:
            now = self.clock.last
            self._forgotten = {d: t for d, t in self._forgotten.items() if t > now}
        if time.monotonic() - self._last_freeze >= FREEZE_EVERY_S:
            # Engine state holds no reference cycles: moving it out of the collector's sight
            # keeps full collections from pausing ingest for hundreds of ms at 100k devices.
            gc.freeze()
            self._last_freeze = time.monotonic()
        covered = self.checkpointer.poll()
        if covered is not None:
            self._checkpointed_id = covered
        if self.instance.due():
            self._archiving = self._archiving or self.wal.archiving()
            if self.instance.lost():
                self._rewrite()
        if (
            self.wal_id != self._checkpointed_id
            and not self.checkpointer.busy
            and not self._handing_off
            and time.monotonic() - self._last_checkpoint >= self.topology.checkpoint_interval_s
        ):
            self.checkpointer.start(self._snapshot, self.wal_id, self._archiving)
            self._last_checkpoint = time.monotonic()

    def _rewrite(self) -> None:
        """Redis lost its data: the checkpoint again at once from memory (the log it covered
        is gone), the epoch counters and the committed layout as this shard knows them."""
        self.wal.restore_epoch(self.epoch)
        if self.layout["version"] > 0:
            self.wal.client.set(COMMITTED, pack(self.layout), nx=True)
        self._checkpointed_id = None
        self._last_checkpoint = 0.0

    def _snapshot(self) -> dict:
        return {**self.engine.snapshot(), "layout": self.layout}

    async def checkpoint(self) -> str:
        """A checkpoint now, waiting for it (operations, rebalances and tests)."""
        self.checkpointer.poll(block=True)
        self.checkpointer.start(self._snapshot, self.wal_id, self._archiving)
        self._checkpointed_id = self.checkpointer.poll(block=True) or self._checkpointed_id
        self._last_checkpoint = time.monotonic()
        return self._checkpointed_id

    # -- routing --------------------------------------------------------------------------------

    def _route(self) -> None:
        moves, space_moves = self.engine.drain_moves()
        self.hooks.emit(space_moves, self.clock.last)
        e = self.epoch
        if moves:
            routed = route_cell_moves(
                ((m.device, m.old, m.new, _epoch_seq(e, m.seq)) for m in moves), self.placement
            )
            self.shards.cells.send_updates(routed)
        if space_moves:
            routed = route_space_moves(
                ((m.device, m.old, m.new, _epoch_seq(e, m.seq)) for m in space_moves),
                self.placement,
            )
            self.shards.spaces.send_updates(routed)

    def _resync(self) -> None:
        self.shards.cells.send_resync(self.name, self._cell_listing())
        self.shards.spaces.send_resync(self.name, self._space_listing())

    def _cell_listing(self) -> dict[str, list]:
        e = self.epoch
        present = ((d, 0, c[0], _epoch_seq(e, s)) for d, c, s in self.engine.present_cells())
        return route_cell_moves(present, self.placement)

    def _space_listing(self) -> dict[str, list]:
        e = self.epoch
        present = ((d, (), sp, _epoch_seq(e, s)) for d, sp, s in self.engine.present_spaces())
        return route_space_moves(present, self.placement)

    async def cell_listing(self, shard: str) -> list:
        """This shard's present devices in `shard`'s cells (a restarted cell shard asks)."""
        return self._cell_listing().get(shard, [])

    async def space_listing(self, shard: str) -> list:
        return self._space_listing().get(shard, [])

    async def relist(self) -> None:
        """A full listing to every cell and space shard (the end of a rebalance)."""
        self._route()
        self._resync()

    # -- rebalancing ----------------------------------------------------------------------------

    def _use_layout(self, layout: dict) -> None:
        self.layout = layout
        self.topology = with_layout(self.topology, layout)
        self.placement = self.topology.placement()
        self.shards.layout.use(self.topology)

    async def handoff(self, layout: dict) -> dict:
        """Move the devices that `layout` places elsewhere to their new shards, then list what
        is left under `layout`'s cell placement.

        Each new owner logs what it adopts before it answers; only then does this shard log
        the handoff. If an adoption fails, the devices stay here (an adopter that got them is
        overwritten by the next attempt), so the rebalance can simply be run again.
        """
        if layout["version"] < self.layout["version"]:
            raise ValueError(f"{self.name} is on layout {self.layout['version']} already")
        self._route()  # moves so far go where the previous layout sends them
        previous = self.layout
        self._use_layout(layout)
        owner = self.placement.user_shard
        groups: dict[str, list[int]] = {}
        for device in self.engine.devices():
            if (shard := owner(device)) != self.name:
                groups.setdefault(shard, []).append(device)
        states = {shard: self.engine.extract(devices) for shard, devices in groups.items()}
        self.epoch = self.wal.next_epoch()  # history marks handed out before no longer apply
        self._handing_off = True  # no checkpoint while the devices are in neither log
        try:
            await asyncio.gather(
                *(self.shards.users.adopt(s, self.name, st) for s, st in states.items())
            )
            leaving = [d for devices in groups.values() for d in devices]
            entry = {"control": "handoff", "layout": layout, "devices": leaving}
            entry["now"] = self.clock()
            self.wal_id = self.wal.append(entry)
        except BaseException:
            for st in states.values():
                self.engine.absorb(st)
            self._use_layout(previous)
            raise
        finally:
            self._handing_off = False
        self._resync()
        moved = {shard: len(devices) for shard, devices in groups.items()}
        log.info("%s handed off %s under layout %d", self.name, moved, layout["version"])
        return {"shard": self.name, "moved": moved, "devices": len(self.engine)}

    async def adopt(self, source: str, state: dict) -> int:
        """Devices handed over by `source`: logged, then taken (replacing any copy of them
        from an earlier attempt). Their later membership updates outrank `source`'s."""
        entry = {"control": "adopt", "from": source, "state": state, "now": self.clock()}
        self.wal_id = self.wal.append(entry)
        n = self._absorb(state)
        self.epoch = self.wal.next_epoch()
        return n

    def _absorb(self, state: dict) -> int:
        self.engine.extract([d for d in state["devices"] if d in self.engine])
        return len(self.engine.absorb(state))

    # -- control and queries --------------------------------------------------------------------

    async def forget(self, device: int, fresh: int) -> str:
        """Forget the device now (state/forgetting.py): logged, then applied; it leaves the
        views through the usual moves. The log id of the entry. Not in the middle of a history
        export, whose parts so far may hold the device's pieces under the key it loses."""
        async with self._exporting:
            self._route()  # moves so far first: applying a control entry drains what is pending
            entry = {"control": "forget", "device": device, "fresh": fresh, "now": self.clock()}
            self.wal_id = self.wal.append(entry)
            self._apply(entry)
            self._route()
        self.hooks.forget(device)  # its events not yet delivered
        return self.wal_id

    async def define_space(self, space: str, polygon: dict, name: str) -> int:
        n = self.engine.define_space(space, polygon, name)
        self._route()
        return n

    async def reload_hooks(self) -> None:
        self.hooks.refresh(force=True)

    async def remove_space(self, space: str) -> None:
        self.engine.remove_space(space)
        self._route()

    async def dwell(self, device: int, day: int) -> dict:
        """{"dwell": answer} when live state holds the device's day, else {"owed": pieces}
        to lay over history's (`engine.history.dwell_of`)."""
        now = self.clock()
        found = self.engine.dwell(device, day, now)
        if found is not None:
            return {"dwell": found}
        return {"owed": self.engine.owed_pieces(device, day, now)}

    async def distance(self, device: int, day: int) -> float | None:
        return self.engine.distance(device, day)

    async def history_export(self) -> tuple[tuple, list[bytes]]:
        """(mark, pieces in msgpack parts): presence pieces owed to history
        (`UserEngine.history_export`). The mark names this incarnation: a restarted shard owes
        another list (from its checkpoint and log)."""
        async with self._exporting:  # one at a time: a retried call waits for the first
            mark, parts = self.engine.history_export_parts(self.clock(), EXPORT_PART)
            packed = []
            for rows in parts:  # packed here, part by part: a list of tuples would be
                if rows:  # pickled in one go, holding the interpreter for the whole of it
                    packed.append(pack(rows))
                await asyncio.sleep(0)
        return (self.epoch, mark), packed

    async def history_confirm(self, mark: tuple) -> None:
        """History holds what the export of `mark` sent: what it holds leaves memory."""
        epoch, inner = mark
        if epoch == self.epoch:
            self.engine.history_confirm(inner)
            evicted, dropped = self.engine.evict(self.clock())
            if evicted or dropped:
                self._evicted.add(evicted)
                log.debug(
                    "%s evicted %d devices, dropped %d watermarks", self.name, evicted, dropped
                )

    async def minute_counts(self, since: int) -> dict:
        """{"since": the first minute answered, "counts": {(place, minute): devices}}."""
        counts = self.engine.minute_counts(self.clock(), since)
        return {"since": max(since, self.engine.minute_horizon), "counts": counts}

    async def stats(self) -> dict:
        return {
            "shard": self.name,
            "epoch": self.epoch,
            "layout": self.layout["version"],
            "devices": len(self.engine),
            "watermarks": self.engine.watermarks,
            "wal_id": self.wal_id,
            "wal_length": self.wal.length(),
            "checkpoint_id": self._checkpointed_id,
            "checkpoint_age_s": round(time.monotonic() - self._last_checkpoint, 1),
            "rss_bytes": rss_bytes(),
        }

    async def pid(self) -> int:
        return os.getpid()
