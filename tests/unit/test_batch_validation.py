"""Validation of a whole batch at once says what checking each ping alone says: the same pings
kept, in the same order with the same attributes, the same rejections with the same reasons."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.ingest_batch import column_lengths, read_batch, read_columns
from engine.validation import Limits, check_message, check_ping, valid_columns
from protos.occupancy.v1 import occupancy_pb2 as pb

NOW = 1_710_000_000_000
LIMITS = Limits()
KNOWN = {"a": 11, "é" * 64: 12}  # what the key cache holds

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([90.0, -90.0, 180.0, -180.0, 90.0000001, -180.0000001, 0.0, -0.0]),
)
times = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, NOW + 30_000, NOW + 30_001, NOW - 7 * 86_400_000, NOW - 7 * 86_400_001]),
    st.integers(NOW - 100_000, NOW + 100_000),
)
ids = st.one_of(
    st.sampled_from(["", "a", "b", "x" * 128, "x" * 129, "é" * 64, "é" * 65, "😀" * 32, "😀" * 33]),
    st.text(max_size=140),
)
accuracy = st.one_of(st.just(0.0), st.floats(width=32, allow_nan=True), st.just(-1.0))
regions = st.one_of(st.just(""), st.sampled_from(["eu", "r" * 64, "r" * 65]))
attributes = st.one_of(
    st.just({}),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3),
    st.just({"k": "v" * 257}),
    st.just({str(i): "v" for i in range(17)}),
)


@st.composite
def messages(draw):
    return pb.Ping(
        device_id=draw(ids),
        ts_ms=draw(times),
        lat=draw(floats),
        lng=draw(floats),
        accuracy_m=draw(accuracy),
        region=draw(regions),
        attributes=draw(attributes),
    )


batches = st.lists(st.one_of(messages(), st.none()), max_size=30)


@settings(max_examples=400, deadline=None)
@given(st.lists(messages(), max_size=30))
def test_the_column_checks_agree_with_each_ping_checked_alone(pings):
    columns = [[getattr(p, f) for p in pings] for f in ("device_id", "ts_ms", "lat", "lng")]
    ok = valid_columns(*columns, [p.accuracy_m for p in pings], NOW, LIMITS)
    for p, valid in zip(pings, ok.tolist(), strict=True):
        alone = check_ping(p.device_id, p.ts_ms, p.lat, p.lng, NOW, LIMITS, p.accuracy_m)
        assert valid == (alone is None), (p, alone)


def _one_by_one(batch, device, base):
    """What each ping alone says: kept (id, ts, lat, lng, accuracy, region, attributes), and
    (index, reason) rejections."""
    kept, rejected = [], []
    for i, p in enumerate(batch):
        reason = "malformed" if p is None else check_message(p, NOW, LIMITS)
        if reason is None and device is not None and p.device_id != device:
            reason = "not_authorized_for_device"
        if reason is not None:
            rejected.append((base + i, str(reason)))
            continue
        row = (p.device_id, p.ts_ms, p.lat, p.lng, p.accuracy_m, p.region, dict(p.attributes))
        kept.append(row)
    return kept, rejected


@settings(max_examples=400, deadline=None)
@given(batches, st.sampled_from([None, "a", "é" * 64]), st.integers(0, 1000))
def test_a_batch_keeps_and_rejects_what_each_ping_alone_would(batch, device, base):
    b = read_batch(batch, device, base, NOW, LIMITS, lambda raw, now: KNOWN.get(raw))
    kept, rejected = _one_by_one(batch, device, base)
    assert [(r.index, r.reason) for r in b.rejections] == rejected
    record = b.pings
    assert len(record) == len(kept)
    raw_ids = [row[0] for row in kept]
    assert record.dev == [KNOWN.get(d, 0) for d in raw_ids]
    assert b.missing == {
        d: [k for k, x in enumerate(raw_ids) if x == d] for d in raw_ids if d not in KNOWN
    }
    assert record.ts == [row[1] for row in kept]
    assert record.lat == [row[2] for row in kept] and record.lng == [row[3] for row in kept]
    assert record.accuracy_m == {k: row[4] for k, row in enumerate(kept) if row[4]}
    assert record.region == {k: row[5] for k, row in enumerate(kept) if row[5]}
    assert record.attributes == {k: row[6] for k, row in enumerate(kept) if row[6]}
    assert all(isinstance(a, dict) for a in record.attributes.values())


def test_a_nan_and_an_infinity_are_refused_with_their_reasons():
    batch = [
        pb.Ping(device_id="a", ts_ms=NOW, lat=math.nan, lng=0.0),
        pb.Ping(device_id="a", ts_ms=NOW, lat=0.0, lng=math.inf),
        pb.Ping(device_id="a", ts_ms=NOW, lat=1.0, lng=2.0),
    ]
    b = read_batch(batch, None, 0, NOW, LIMITS, lambda raw, now: None)
    assert [(r.index, r.reason) for r in b.rejections] == [
        (0, "lat_not_finite"),
        (1, "lng_not_finite"),
    ]
    assert b.pings.lat == [1.0] and b.missing == {"a": [0]}


def _columns(pings: list[pb.Ping], accuracy: bool, region: bool) -> pb.SendPingColumnsRequest:
    request = pb.SendPingColumnsRequest(
        device_ids=[p.device_id for p in pings],
        ts_ms=[p.ts_ms for p in pings],
        lat=[p.lat for p in pings],
        lng=[p.lng for p in pings],
    )
    if accuracy:
        request.accuracy_m.extend(p.accuracy_m for p in pings)
    if region:
        request.region.extend(p.region for p in pings)
    return request


def _read(b) -> tuple:
    r = b.pings
    rows = (r.dev, r.ts, r.lat, r.lng, r.accuracy_m, r.region, r.attributes)
    return [(x.index, x.reason) for x in b.rejections], rows, b.missing


@settings(max_examples=400, deadline=None)
@given(
    st.lists(messages(), max_size=30),
    st.sampled_from([None, "a", "é" * 64]),
    st.booleans(),
    st.booleans(),
)
def test_pings_sent_as_columns_are_read_as_the_same_pings_sent_as_messages(
    pings, device, accuracy, region
):
    for p in pings:
        p.ClearField("attributes")  # columns carry none
        if not accuracy:
            p.accuracy_m = 0.0
        if not region:
            p.region = ""
    cached = lambda raw, now: KNOWN.get(raw)  # noqa: E731
    request = pb.SendPingColumnsRequest.FromString(
        _columns(pings, accuracy, region).SerializeToString()  # as it comes off the wire
    )
    as_columns = read_columns(request, device, NOW, LIMITS, cached)
    assert _read(as_columns) == _read(read_batch(pings, device, 0, NOW, LIMITS, cached))


@given(st.lists(messages(), min_size=1, max_size=5), st.sampled_from(["ts_ms", "lat", "lng"]))
def test_columns_of_different_lengths_are_refused_whole(pings, short):
    request = _columns(pings, True, True)
    del getattr(request, short)[-1]
    assert f"{len(pings) - 1} {short} for {len(pings)} device_ids" in column_lengths(request)
    for optional in ("accuracy_m", "region"):
        request = _columns(pings, True, True)
        getattr(request, optional).append(getattr(request, optional)[0])
        assert column_lengths(request).startswith(f"{len(pings) + 1} {optional}")
        assert column_lengths(_columns(pings, False, False)) is None
