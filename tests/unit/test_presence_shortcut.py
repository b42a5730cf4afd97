"""The tracker's shortcut for a device pinging again in its cell does what the general path
does: the same moves, settled intervals, segments, wake-ups and state, ping by ping."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.geo import haversine_m, haversine_many
from engine.presence import PresenceTracker

TTL = 120_000
T = 1_700_000_000_000
CELLS = (617700170065510399, 617700170065510400)

# steps of one device: (ts after its previous ping, cell, how far `now` lags behind the ts);
# gaps cluster around the TTL, where a stay breaks or a device expires
gaps = st.one_of(
    st.integers(1, 30_000),
    st.integers(TTL - 3, TTL + 3),
    st.integers(-5_000, 0),  # late or duplicate
    st.integers(30_001, 3 * TTL),
)
pings = st.lists(
    st.tuples(st.integers(0, 3), gaps, st.sampled_from(CELLS), st.integers(-20_000, 5_000)),
    min_size=1,
    max_size=60,
)


def _outboxes(tr: PresenceTracker) -> tuple:
    out = (list(tr.moves), list(tr.settled), list(tr.revived), tr.drain_segments())
    tr.moves.clear(), tr.settled.clear(), tr.revived.clear()
    return out


@settings(max_examples=300, deadline=None)
@given(pings, st.lists(st.integers(0, TTL), max_size=5))
def test_the_shortcut_changes_nothing_the_general_path_would_not(steps, advances):
    fast, general = PresenceTracker(TTL), PresenceTracker(TTL)
    general.shortcut = False
    last = dict.fromkeys(range(4), T)
    now = T
    for k, (device, gap, cell, lag) in enumerate(steps):
        ts = last[device] + gap
        last[device] = max(last[device], ts)
        now = max(now, ts + lag)  # `now` never goes back; a ping may be ahead of it
        lat, lng = 52.6 + k * 1e-4, -8.7 - device * 1e-4
        assert fast.apply(device, ts, cell, lat, lng, now) == general.apply(
            device, ts, cell, lat, lng, now
        )
        assert _outboxes(fast) == _outboxes(general)
        if advances and k % 7 == 6:
            now += advances[k % len(advances)]
            fast.advance(now)
            general.advance(now)
            assert _outboxes(fast) == _outboxes(general)
    for tr in (fast, general):
        tr.advance(now + 3 * TTL)
    assert _outboxes(fast) == _outboxes(general)
    assert fast.snapshot() == general.snapshot()


@given(
    st.lists(
        st.tuples(
            st.floats(-90, 90), st.floats(-180, 180), st.floats(-90, 90), st.floats(-180, 180)
        ),
        min_size=1,
        max_size=50,
    )
)
def test_a_batch_measures_as_each_step_alone(quads):
    many = haversine_many(*zip(*quads, strict=True))
    for (a, b, c, d), meters in zip(quads, many, strict=True):
        assert math.isclose(meters, haversine_m(a, b, c, d), rel_tol=1e-9, abs_tol=1e-6)
