"""The logic of one user shard: presence, dwell, distance and minute aggregates of its devices."""

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from engine.cells import parent
from engine.dwell import DwellLedger
from engine.history import PresenceHistory
from engine.minutes import MinuteAggregator
from engine.presence import NOWHERE, Move, PresenceTracker
from engine.spaces import SpaceIndex
from engine.spec import EngineSpec
from engine.timeutil import DAY_MS, MINUTE_MS, day_of, minute_of

# a watermark outlives the last ping it could judge by this much (clocks of the ingest handlers
# and shards, batches waiting in queues)
WATERMARK_MARGIN_MS = 120_000
MAX_CACHED_PLACES = 100_000  # cells whose coarser parents and spaces are kept at hand


class SpaceMove(NamedTuple):
    """The device's polygon spaces changed; `seq` grows with every space move of this engine.
    `at`: when (the cell move's `at`; 0 for a space defined or removed: at the caller's now)."""

    device: int
    old: tuple[str, ...]
    new: tuple[str, ...]
    seq: int
    at: int = 0


class UserEngine:
    """Everything a user shard knows, fed with pings in arrival order and an injected clock.

    `ingest` and `advance` leave the resulting membership changes in `cell_moves` and
    `space_moves` for the caller to route to the cell and space shards (`drain_moves`).
    Replaying the same calls from a snapshot reproduces the same state and the same moves.
    Devices move between engines with all of their state (`extract`, then `absorb`), after
    which every answer about them is what it would have been had they always lived there.

    Live state stays bounded (`evict`, after each confirmed history export): devices gone for
    longer than the live minute window whose presence is all in history leave memory but for a
    watermark; dwell days before the live window and minutes before it go too. An answer live
    state can no longer give exactly is None (`dwell`), and the caller lays the pieces this
    engine still owes (`owed_pieces`) over history's.
    """

    def __init__(self, spec: EngineSpec, state: dict | None = None):
        self.spec = spec
        if state is None:
            self.tracker = PresenceTracker(spec.ttl_ms)
            self.ledger = DwellLedger()
            self.minutes = MinuteAggregator()
            self.history = PresenceHistory()
            self.spaces = SpaceIndex(spec.res)
            self._space_seq = 0
        else:
            self.tracker = PresenceTracker.restore(state["tracker"])
            self.ledger = DwellLedger.restore(state["ledger"])
            self.minutes = MinuteAggregator.restore(state["minutes"])
            self.history = PresenceHistory.restore(state.get("history"))
            self.spaces = SpaceIndex.restore(state["spaces"])
            self._space_seq = state["space_seq"]
        self._coarser = tuple(r for r in spec.minute_res if r < spec.res)
        self._places: dict[int, tuple] = {}  # cell -> its minute places (`_minute_places`)
        self._dwelt: dict[int, tuple] = {}  # cell -> its dwell places (`_dwell_places`)
        self.cell_moves: list[Move] = []
        self.space_moves: list[SpaceMove] = []

    # -- input ----------------------------------------------------------------------------------

    def ingest(
        self,
        devices: Sequence[int],
        ts: Sequence[int],
        cells: Sequence[int],
        lats: Sequence[float],
        lngs: Sequence[float],
        now: int,
    ) -> list[bool]:
        """Apply valid, indexed pings in order; True for each applied one, False for late."""
        apply = self.tracker.apply
        applied = [apply(*p, now) for p in zip(devices, ts, cells, lats, lngs, strict=True)]
        self._drain()
        return applied

    def advance(self, now: int) -> None:
        self.tracker.advance(now)
        self._drain()

    def define_space(self, space: str, polygon: dict, name: str = "") -> int:
        """Define or redefine a polygon space; returns its cell count. Present devices' space
        memberships change at once (space moves)."""
        before = self._present_spaces()
        cells = self.spaces.define(space, polygon, name)
        self._respace(before)
        return len(cells)

    def remove_space(self, space: str) -> None:
        before = self._present_spaces()
        self.spaces.remove(space)
        self._respace(before)

    def use_spaces(self, defined: dict[str, dict]) -> None:
        """The polygon spaces as `defined` ({space: {polygon, name}}, as stored): those of a
        checkpoint deleted since go, every other is defined (again)."""
        for space in set(self.spaces.spaces()) - set(defined):
            self.remove_space(space)
        for space, definition in defined.items():
            self.define_space(space, definition["polygon"], definition["name"])

    def forget(self, device: int, fresh: int, now: int) -> bool:
        """The device is forgotten at `now`: it leaves as if its presence ended then (moves
        to NOWHERE for the views), its dwell, distance and watermark go, and what counts
        keep of it (minute sets, presence owed to history) is kept under `fresh`, a key
        nothing links to the device. Counts at any time before `now` do not change. False if
        this engine did not know the device (nothing changes then)."""
        known = self.tracker.leave(device, now)
        self._drain()
        self.ledger.forget(device)
        self.minutes.rekey(device, fresh)
        self.history.rekey(device, fresh)
        return known

    def drain_moves(self) -> tuple[list[Move], list[SpaceMove]]:
        moves, self.cell_moves = self.cell_moves, []
        space_moves, self.space_moves = self.space_moves, []
        return moves, space_moves

    def evict(self, now: int) -> tuple[int, int]:
        """Forget what history holds and live answers no longer need; call it after a history
        export was confirmed. (devices evicted, watermarks dropped).

        - dwell days before the live window (`dwell_days`), minutes before the live minute
          window (`live_minutes`) unless history still owes them;
        - devices whose presence expired before the minute window and is all in history,
          each but for a watermark (`PresenceTracker.evict`);
        - watermarks no ping could need any more: the device's latest ping and its TTL lie
          beyond `max_age` (with a margin for clocks and queues), so any ping newer than the
          watermark is applied anyway and any older one is `ts_too_old`."""
        spec = self.spec
        self.ledger.evict_before(day_of(now) - (spec.dwell_days - 1) * DAY_MS)
        horizon = minute_of(now) - spec.live_minutes * MINUTE_MS
        oldest = self.history.oldest_owed()
        if oldest is not None:
            horizon = min(horizon, minute_of(oldest))
        self.minutes.evict_before(horizon)
        horizon, owing, evicted = self.minutes.horizon, self.history.owing(), 0
        in_history = self.history.in_history
        for device in list(self.tracker.expired):
            cell, start, end = self.tracker.last_stay(device)
            places = self._dwell_places(cell)
            if end <= horizon and device not in owing and in_history(device, places, start, end):
                self.tracker.evict(device)
                self.ledger.forget(device)
                self.history.forget(device)
                evicted += 1
        before = now - spec.limits.max_age_ms - spec.ttl_ms - WATERMARK_MARGIN_MS
        return evicted, self.tracker.drop_watermarks(before)

    # -- queries --------------------------------------------------------------------------------

    def dwell(self, device: int, day: int, now: int) -> dict[str, dict] | None:
        """{"cells": {cell: ms}, "spaces": {space: ms}} on the UTC day starting at `day`; None
        when live state does not hold all of that day (the device or the day left memory):
        then history's pieces with `owed_pieces` laid over them give it."""
        since = self.tracker.since(device)
        if since is None or day < max(self.ledger.horizon, since, self.tracker.dropped_until):
            return None
        open_ = [
            (self._dwell_places(i.cell), i.start, i.end)
            for i in self.tracker.unsettled(device, now)
        ]
        out: dict[str, dict] = {"cells": {}, "spaces": {}}
        for place, ms in self.ledger.dwell(device, day, open_).items():
            out["spaces" if isinstance(place, str) else "cells"][place] = ms
        return out

    def owed_pieces(self, device: int, day: int, now: int) -> list:
        """The device's presence pieces on `day` that history does not hold as they are now
        (`PresenceHistory.owed`); none for a device not held."""
        stays = [
            (device, self._dwell_places(i.cell), i.start, i.end)
            for i in self.tracker.open_stays(now, (device,))
        ]
        return self.history.owed(device, day, stays)

    def distance(self, device: int, day: int) -> float | None:
        """Metres on `day`; None when live state does not hold all of that day."""
        since = self.tracker.since(device)
        if since is None or day < max(self.ledger.horizon, since, self.tracker.dropped_until):
            return None
        return self.ledger.distance(device, day)

    @property
    def minute_horizon(self) -> int:
        """The first minute `minute_counts` answers for (history has those before)."""
        return self.minutes.horizon

    @property
    def watermarks(self) -> int:
        return self.tracker.watermarks

    def minute_counts(self, now: int, since: int = 0) -> dict[tuple[int | str, int], int]:
        """{(place, minute): distinct devices} of this shard's devices, for minutes >= since;
        places are cells at the minute resolutions and polygon spaces."""
        open_ = (
            (i.device, self._minute_places(i.cell), i.start, i.end)
            for i in self.tracker.all_unsettled(now + 1)
            if i.end > since
        )
        return self.minutes.counts(open_, minute_of(since))

    def history_export(self, now: int) -> tuple[tuple, list]:
        """(mark, pieces) for the history store (`PresenceHistory.export`): settled intervals
        not yet confirmed and the open ones up to `now`, per place (base cell and spaces)."""
        return self.history.export(self._open_places(now), now)

    def history_export_parts(self, now: int, part: int) -> tuple[tuple, Iterator[list]]:
        """`history_export` for a caller that lets other work run in between (ingest, say):
        the mark at once, then the pieces lazily, those of the settled intervals first, then
        those of `part` devices at a time. The devices held at the start are walked, those gone
        by their turn skipped; one that came in between is exported next time
        (`PresenceHistory.begin_export`)."""
        mark, settled = self.history.begin_export()
        held = self.tracker.held()

        def parts() -> Iterator[list]:
            yield settled
            for start in range(0, len(held), part):
                rows: list = []
                self.history.export_open(
                    self._open_places(now, held[start : start + part]), now, rows
                )
                yield rows

        return mark, parts()

    def _open_places(self, now: int, devices: Iterable[int] | None = None) -> Iterator[tuple]:
        for i in self.tracker.open_stays(now, devices):
            yield i.device, self._dwell_places(i.cell), i.start, i.end

    def history_confirm(self, mark: int) -> None:
        self.history.confirm(mark)

    def present_cells(self) -> list[tuple[int, tuple[int], int]]:
        """Every present device's cell membership, for rebuilding cell shards."""
        return [(dev, (cell,), seq) for dev, cell, seq in self.tracker.present()]

    def present_spaces(self) -> list[tuple[int, tuple[str, ...], int]]:
        """Every present device's space membership, for rebuilding space shards."""
        return [(dev, spaces, self._space_seq) for dev, spaces in self._present_spaces().items()]

    def devices(self) -> Iterator[int]:
        """The devices this engine knows, held or evicted (do not extract while iterating)."""
        return self.tracker.devices()

    def __len__(self) -> int:
        """Devices held in memory."""
        return len(self.tracker)

    def __contains__(self, device: int) -> bool:
        """Held, or evicted with a watermark."""
        return device in self.tracker

    # -- internals ------------------------------------------------------------------------------

    def _minute_places(self, cell: int) -> tuple:
        places = self._places.get(cell)
        if places is None:
            if len(self._places) >= MAX_CACHED_PLACES:  # a fleet crossing a country
                self._places.clear()
            coarse = tuple(parent(cell, r) for r in self._coarser)
            places = self._places[cell] = (cell, *coarse, *self.spaces.spaces_of(cell))
        return places

    def _dwell_places(self, cell: int) -> tuple:
        places = self._dwelt.get(cell)
        if places is None:
            if len(self._dwelt) >= MAX_CACHED_PLACES:
                self._dwelt.clear()
            places = self._dwelt[cell] = (cell, *self.spaces.spaces_of(cell))
        return places

    def _drain(self) -> None:
        tracker = self.tracker
        for device, cell, start, end in tracker.revived:
            self.history.reopen(device, self._dwell_places(cell), start, end)
        tracker.revived.clear()
        for device, cell, start, end in tracker.settled:
            self.minutes.add(device, self._minute_places(cell), start, end)
            self.ledger.add_interval(device, self._dwell_places(cell), start, end)
            self.history.settled(device, self._dwell_places(cell), start, end)
        tracker.settled.clear()
        for segment in tracker.drain_segments():
            self.ledger.add_segment(*segment)
        spaces_of = self.spaces.spaces_of
        for move in tracker.moves:
            self.cell_moves.append(move)
            old = spaces_of(move.old) if move.old != NOWHERE else ()
            new = spaces_of(move.new) if move.new != NOWHERE else ()
            if old != new:
                self._space_seq += 1
                self.space_moves.append(SpaceMove(move.device, old, new, self._space_seq, move.at))
        tracker.moves.clear()

    def _present_spaces(self) -> dict[int, tuple[str, ...]]:
        spaces_of = self.spaces.spaces_of
        return {dev: s for dev, cell, _ in self.tracker.present() if (s := spaces_of(cell))}

    def _respace(self, before: dict[int, tuple[str, ...]]) -> None:
        self._places.clear()
        self._dwelt.clear()
        after = self._present_spaces()
        for device in before.keys() | after.keys():
            old, new = before.get(device, ()), after.get(device, ())
            if old != new:
                self._space_seq += 1
                self.space_moves.append(SpaceMove(device, old, new, self._space_seq))

    # -- snapshot -------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Plain data (msgpack-able). Moves not yet drained are not part of it: the caller
        routes them before it checkpoints."""
        return {
            "spec": self.spec.to_dict(),
            "tracker": self.tracker.snapshot(),
            "ledger": self.ledger.snapshot(),
            "minutes": self.minutes.snapshot(),
            "history": self.history.snapshot(),
            "spaces": self.spaces.snapshot(),
            "space_seq": self._space_seq,
        }

    @classmethod
    def restore(cls, state: dict) -> "UserEngine":
        return cls(EngineSpec.from_dict(state["spec"]), state)

    # -- handoff --------------------------------------------------------------------------------

    def extract(self, devices: Iterable[int]) -> dict:
        """Remove the devices this engine holds among `devices` and return all of their state
        as plain data (msgpack-able) for `absorb` on another engine. The caller routes the
        moves first: an engine with moves not yet drained refuses."""
        if self.cell_moves or self.space_moves:
            raise RuntimeError("route the moves before extracting devices")
        held = [d for d in dict.fromkeys(devices) if d in self.tracker]
        return {
            "devices": held,
            "tracker": self.tracker.extract(held),
            "ledger": self.ledger.extract(held),
            "minutes": self.minutes.extract(held),
            "history": self.history.extract(held),
            "space_seq": self._space_seq,
        }

    def absorb(self, state: dict) -> list[int]:
        """Take the devices of an `extract` state that this engine does not hold yet, with
        all of their state; returns them. Devices already held are ignored entirely, so
        absorbing the same state twice changes nothing. Emits no moves (the devices' cells
        are what they were); later space moves of this engine outnumber the sender's."""
        new = [d for d in state["devices"] if d not in self.tracker]
        taken = set(new)
        self.tracker.absorb(state["tracker"])
        self.ledger.absorb(state["ledger"], taken)
        self.minutes.absorb(state["minutes"], taken)
        self.history.absorb(state["history"], taken)
        self._space_seq = max(self._space_seq, state["space_seq"])
        return new
