"""The client library's Server-Sent Events reading (occupancy/client/sse.py), without an engine:
the SSE line rules over bytes cut anywhere, and what a stream keeps to reconnect."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from occupancy.client import ApiError, StreamError
from occupancy.client import results as r
from occupancy.client.sse import MAX_RECONNECTS, Event, EventReader, Stream

WIRE = (
    b"retry: 2000\n\n"
    b'id: 17\nevent: counts\ndata: {"as_of": 17, "spaces": {"hq": 3}, "cells": []}\n\n'
    b": heartbeat\n\n"
    b"data: one\r\ndata:two\r\n\r\n"
    b'id: 18\nevent: counts\ndata: {"as_of": 18, "spaces": {"hq": 4},\n'
    b'data:  "cells": [{"cell": "89", "count": 2}]}\n\n'
    b"event: unknown-kind\nnonsense\ndata: x\n\n"
)
EXPECTED = [
    Event("counts", '{"as_of": 17, "spaces": {"hq": 3}, "cells": []}', "17"),
    Event("message", "one\ntwo", "17"),  # the last id stays the stream's
    Event(
        "counts",
        '{"as_of": 18, "spaces": {"hq": 4},\n "cells": [{"cell": "89", "count": 2}]}',
        "18",
    ),
    Event("unknown-kind", "x", "18"),
]


def _read(chunks: list[bytes]) -> tuple[list[Event], int]:
    reader = EventReader()
    events = [e for chunk in chunks for e in reader.feed(chunk)]
    return events, reader.retry_ms


def test_events_from_one_chunk():
    assert _read([WIRE]) == (EXPECTED, 2000)


@given(st.sets(st.integers(1, len(WIRE) - 1), max_size=40))
def test_events_are_the_same_however_the_bytes_are_cut(cuts):
    bounds = [0, *sorted(cuts), len(WIRE)]
    chunks = [WIRE[a:b] for a, b in itertools.pairwise(bounds)]
    assert _read(chunks) == (EXPECTED, 2000)


def test_a_lone_cr_ends_a_line_and_an_unfinished_event_is_not_sent():
    assert _read([b"data: a\rdata: b\r\r", b"data: never ended\n"])[0] == [Event("message", "a\nb")]


def test_a_stream_counts_down_its_limit_and_keeps_the_last_id():
    s = Stream(["hq", "lab"], limit=2)
    assert s.params() == {"spaces": "hq,lab", "bbox": None, "res": None, "limit": 2}
    assert s.headers() == {}
    got = s.take(WIRE)
    assert [(c.as_of, c.spaces, c.id) for c in got] == [(17, {"hq": 3}, 17), (18, {"hq": 4}, 18)]
    assert got[1].cells == [r.CellCount("89", 2)]
    assert s.done and s.headers() == {"Last-Event-ID": "18"}
    s.limit = 3
    assert s.params()["limit"] == 1  # a reconnection asks for what is left


def test_an_error_event_raises_and_failures_end_reconnecting():
    s = Stream(bbox="1,2,3,4")
    with pytest.raises(StreamError) as err:
        s.take(b'event: error\ndata: {"error": {"code": "unauthenticated", "message": "m"}}\n\n')
    assert err.value.code == "unauthenticated"
    with pytest.raises(ApiError):  # a 4xx is not retried
        s.retry(ApiError("x", 404, "unknown_space"))
    s = Stream(bbox="1,2,3,4")
    assert s.retry(ApiError("busy", 503, "unavailable", retry_after=5.0)) == 5.0
    assert s.retry(None) == 2.0
    for _ in range(MAX_RECONNECTS - 2):
        s.retry(None)
    with pytest.raises(ApiError):
        s.retry(None)
