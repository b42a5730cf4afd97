"""Presence pieces for history: an open interval that a newer ping cuts short is replaced, and
the days it no longer reaches are buried."""

from engine.history import PresenceHistory, pieces
from engine.spec import EngineSpec
from engine.timeutil import DAY_MS
from engine.user import UserEngine

DAY = 1_710_028_800_000  # 2024-03-10 00:00 UTC
CELL_A, CELL_B = 617418551581999103, 617418551582261247


def latest(store: dict, rows) -> None:
    for device, day, place, start, lo, hi in rows:
        store[(device, day, place, start)] = (lo, hi)


def test_pieces_split_at_midnight():
    assert pieces(1, (CELL_A, "mall"), DAY - 1000, DAY + 500) == [
        (1, DAY - DAY_MS, CELL_A, DAY - 1000, DAY - 1000, DAY),
        (1, DAY - DAY_MS, "mall", DAY - 1000, DAY - 1000, DAY),
        (1, DAY, CELL_A, DAY - 1000, DAY, DAY + 500),
        (1, DAY, "mall", DAY - 1000, DAY, DAY + 500),
    ]


def test_a_cut_open_interval_leaves_no_piece_behind():
    engine = UserEngine(EngineSpec(ttl_ms=120_000))
    store: dict = {}
    before = DAY - 30_000
    engine.ingest([7], [before], [CELL_A], [52.0], [-8.0], now=before)
    # exported after midnight: the open interval reaches into the new day
    mark, rows = engine.history_export(DAY + 20_000)
    latest(store, rows)
    engine.history_confirm(mark)
    assert store[(7, DAY, CELL_A, before)] == (DAY, DAY + 20_000)
    # a ping stamped before midnight arrives late but is newer: the device left A at DAY - 10 s
    engine.ingest([7], [DAY - 10_000], [CELL_B], [52.1], [-8.1], now=DAY + 25_000)
    mark, rows = engine.history_export(DAY + 25_000)
    latest(store, rows)
    engine.history_confirm(mark)
    assert store[(7, DAY - DAY_MS, CELL_A, before)] == (before, DAY - 10_000)
    assert store[(7, DAY, CELL_A, before)] == (0, 0)  # buried
    assert store[(7, DAY, CELL_B, DAY - 10_000)] == (DAY, DAY + 25_000)


def test_unconfirmed_exports_are_sent_again_and_survive_a_snapshot():
    h = PresenceHistory()
    h.settled(1, (CELL_A,), DAY, DAY + 5_000)
    mark, rows = h.export([])
    assert rows == pieces(1, (CELL_A,), DAY, DAY + 5_000)
    h = PresenceHistory.restore(h.snapshot())  # not confirmed: still owed
    assert h.export([])[1] == rows
    h.confirm(mark)
    assert h.export([])[1] == []
