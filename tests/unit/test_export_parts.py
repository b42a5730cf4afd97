"""A history export walked in parts (as a user shard walks it, letting ingest run in between)
against the oracle: whatever arrives, moves, settles or expires between two parts reaches
history, by this export or the next."""

from hypothesis import given
from hypothesis import strategies as st

from engine.cells import cell_of
from engine.spec import EngineSpec
from engine.user import UserEngine
from tests.unit.test_engine_oracle import SPEC, Runner, check_history
from tests.workload import T0, Op, workloads


@given(workloads(max_size=30), workloads(max_size=40), workloads(max_size=20), st.booleans())
def test_what_happens_between_parts_reaches_history(before, between, after, confirm):
    runner = Runner()
    runner.run(before)
    runner.export(in_parts=True, confirm=confirm)  # its first part
    runner.step_parts = False
    # between two parts the shard ingests and advances, but neither exports nor restarts
    runner.run([Op("check", op.dt) if op.kind in ("tick", "snapshot") else op for op in between])
    runner.cluster.advance(runner.now)
    runner.export_part(until_done=True)
    runner.step_parts = True
    runner.run(after)
    check_history(runner)
    runner.now += SPEC.ttl_ms + 60_000
    runner.cluster.advance(runner.now)
    check_history(runner, every_minute=True)


def test_a_stay_settled_between_parts_is_exported_by_the_next_export():
    """Two devices in X; the export's first part walks one; both move to Y before the second
    part. Their stays in X settle after the export began: its mark must not count them."""
    spec = EngineSpec(ttl_ms=120_000)
    engine = UserEngine(spec)
    x, y = cell_of(52.66, -8.63, spec.res), cell_of(52.96, -8.63, spec.res)
    t0 = T0
    for device in (1, 2):
        engine.ingest([device], [t0], [x], [52.66], [-8.63], t0)
    mark, parts = engine.history_export_parts(t0 + 10_000, 1)
    rows = next(parts) + next(parts)  # the settled intervals (none), then one device
    engine.ingest([1, 2], [t0 + 20_000] * 2, [y, y], [52.96] * 2, [-8.63] * 2, t0 + 20_000)
    rows += [r for part in parts for r in part]
    engine.history_confirm(mark)  # history holds what it sent
    _, later = engine.history_export(t0 + 30_000)
    stored = {(d, place, start): (lo, hi) for d, _, place, start, lo, hi in [*rows, *later]}
    for device in (1, 2):
        assert stored[(device, x, t0)] == (t0, t0 + 20_000)
        assert stored[(device, y, t0 + 20_000)] == (t0 + 20_000, t0 + 30_000)
