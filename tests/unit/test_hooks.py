"""Webhooks' pure parts (engine/hooks.py): definitions, ids, signatures, the retry schedule,
enters and exits from space moves (at the time of the change, whatever the clock's pace), the
crossing detector against a brute force; and the routes over stand-ins (admins only, no secret
shown)."""

import hashlib
import hmac
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.hooks import (
    backoff_s,
    check_hook,
    crossing,
    level_id,
    membership_id,
    sign,
    space_events,
    verify,
)
from engine.presence import PresenceTracker
from tests.unit.api_standins import Client, api_context

SECRET = "s" * 16
URL = "http://127.0.0.1:9/hook"


def test_a_definition_is_normalised():
    spec = check_hook(URL, SECRET, ["a", "b", "a"], ["below", "enter", "above"], 3)
    assert spec.spaces == ("a", "b") and spec.events == ("enter", "above", "below")
    assert check_hook(URL, SECRET, ["a"], ["exit"], None).threshold is None


@pytest.mark.parametrize(
    "url, secret, spaces, events, threshold, says",
    [
        ("ftp://x/y", SECRET, ["a"], ["enter"], None, "url"),
        ("http:///path", SECRET, ["a"], ["enter"], None, "url"),
        ("http://x/" + "p" * 2048, SECRET, ["a"], ["enter"], None, "url"),
        (URL, "short", ["a"], ["enter"], None, "secret"),
        (URL, "x" * 257, ["a"], ["enter"], None, "secret"),
        (URL, SECRET, [], ["enter"], None, "spaces"),
        (URL, SECRET, ["a"], [], None, "events"),
        (URL, SECRET, ["a"], ["enter", "leave"], None, "events"),
        (URL, SECRET, ["a"], ["above"], None, "threshold"),
        (URL, SECRET, ["a"], ["below"], -1, "threshold"),
        (URL, SECRET, ["a"], ["above"], True, "threshold"),
        (URL, SECRET, ["a"], ["enter"], 3, "threshold"),
    ],
)
def test_a_bad_definition_says_what_is_wrong(url, secret, spaces, events, threshold, says):
    with pytest.raises(ValueError, match=says):
        check_hook(url, secret, spaces, events, threshold)


def test_the_signature_is_the_hmac_of_the_body():
    body = b'{"id":"x"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == f"sha256={expected}"
    assert verify(SECRET, body, sign(SECRET, body))
    assert not verify(SECRET, body + b" ", sign(SECRET, body))
    assert not verify("t" * 16, body, sign(SECRET, body))


def test_ids_are_functions_of_what_happened():
    assert membership_id(7, "a", "enter", 1000) == membership_id(7, "a", "enter", 1000)
    others = {
        membership_id(8, "a", "enter", 1000),
        membership_id(7, "b", "enter", 1000),
        membership_id(7, "a", "exit", 1000),
        membership_id(7, "a", "enter", 1001),
        membership_id(7, "a", "enter", 1000),
    }
    assert len(others) == 5
    assert level_id("h", "a", "above", 3, 10) != level_id("h", "a", "above", 4, 10)


def test_the_backoff_doubles_up_to_its_cap_with_jitter():
    assert backoff_s(0, 1.0, 60.0, 0.5) == 0
    full = [backoff_s(n, 1.0, 60.0, 0.999999) for n in range(1, 10)]
    assert full == pytest.approx([1, 2, 4, 8, 16, 32, 60, 60, 60], rel=1e-5)
    assert [backoff_s(n, 1.0, 60.0, 0.0) for n in (1, 3, 9)] == [0.5, 2.0, 30.0]
    assert backoff_s(10_000, 0.1, 5.0, 0.5) == 3.75  # no overflow far along


@given(st.lists(st.integers(0, 8), max_size=60), st.integers(0, 6))
def test_crossings_against_a_brute_force(counts, threshold):
    side, found = None, []
    for i, n in enumerate(counts):
        kind = crossing(side, n, threshold)
        if kind is not None:
            found.append((i, kind))
            side = kind == "above"
    # brute force: the side of each count against the side before it (at or below at first)
    sides = [False] + [n > threshold for n in counts]
    expected = [
        (i, "above" if sides[i + 1] else "below")
        for i in range(len(counts))
        if sides[i + 1] != sides[i]
    ]
    assert found == expected
    kinds = [k for _, k in found]
    assert all(a != b for a, b in itertools.pairwise(kinds))  # they alternate
    assert not kinds or kinds[0] == "above"


def test_space_events_of_moves():
    moves = [
        (1, (), ("a", "b"), 1, 100),
        (1, ("a", "b"), ("b",), 2, 200),
        (2, ("c",), (), 3, 300),
    ]
    found = list(space_events(moves, frozenset({"a", "c"})))
    assert [tuple(e) for e in found] == [
        ("enter", "a", 1, 100),
        ("exit", "a", 1, 200),
        ("exit", "c", 2, 300),
    ]


A, B = 617700170065510399, 617700170065510400
TTL = 10_000


@given(
    st.lists(st.tuples(st.integers(1, 30_000), st.booleans()), min_size=1, max_size=12),
    st.lists(st.integers(1, 200_000), max_size=20),
)
def test_moves_carry_the_time_of_the_change_whatever_the_clock(pings, ticks):
    """The same pings (ts ascending, each applied when due) under clocks of different paces:
    one that ticks at every instant a stay may run out, one that ticks at random instants and
    one that ticks only at pings. Each sees every enter and exit of cell A at the time of the
    change: the oracle's boundaries of A's stays (joined where they touch). A shard replaying
    its log after a restart (no ticks between entries) makes the same events, with the same ids."""
    ts, times = 0, []
    for gap, in_a in pings:
        ts += gap
        times.append((ts, A if in_a else B))

    def run(instants: set[int]) -> list[tuple[str, int]]:
        tracker, now = PresenceTracker(TTL), 0
        pending = sorted(instants)
        for t, cell in times:
            while pending and pending[0] < t:
                now = max(now, pending.pop(0))
                tracker.advance(now)
            now = max(now, t)
            tracker.apply(1, t, cell, 0.0, 0.0, now)
        tracker.advance(times[-1][0] + 2 * TTL)
        return [
            ("enter" if new == A else "exit", at)
            for _, old, new, _, at in tracker.moves
            if (old == A) != (new == A)
        ]

    stays: list[list[int]] = []
    for i, (t, cell) in enumerate(times):
        end = min(times[i + 1][0], t + TTL) if i + 1 < len(times) else t + TTL
        if cell == A:
            if stays and stays[-1][1] == t:
                stays[-1][1] = end
            else:
                stays.append([t, end])
    oracle = [e for s, end in stays for e in (("enter", s), ("exit", end))]
    assert run({t + TTL for t, _ in times}) == oracle
    assert run(set(ticks)) == oracle
    assert run(set()) == oracle


def test_routes_are_for_admins_and_never_show_the_secret():
    client = Client(api_context())
    body = {"url": URL, "secret": SECRET, "spaces": ["lab"], "events": ["enter", "above"]}
    assert client.send("PUT", "/v1/hooks/h1", "viewer-key", body).status == 403
    r = client.send("PUT", "/v1/hooks/h1", "admin-key", body)
    assert r.status == 400 and r.error[0] == "bad_hook"  # above without a threshold
    r = client.send("PUT", "/v1/hooks/h1", "admin-key", {**body, "threshold": 5})
    assert r.status == 200 and r.json()["secret"] == "set"
    body["threshold"] = 5
    r = client.send("PUT", "/v1/hooks/h2", "admin-key", {**body, "spaces": ["nowhere"]})
    assert r.status == 404 and r.error[0] == "unknown_space"
    r = client.send("PUT", "/v1/hooks/h2", "admin-key", {**body, "spaces": ["hall"]})
    assert r.status == 400 and "door space" in r.error[1]  # no enter or exit at doors
    assert client.get("/v1/hooks", "viewer-key").status == 403
    listed = client.get("/v1/hooks", "admin-key").json()["hooks"]
    assert [(h["hook"], h["status"], h["threshold"]) for h in listed] == [("h1", "active", 5)]
    assert SECRET not in str(listed)
    assert client.send("DELETE", "/v1/hooks/h1", "viewer-key").status == 403
    assert client.send("DELETE", "/v1/hooks/h1", "admin-key").json() == {
        "hook": "h1",
        "deleted": True,
    }
    assert client.send("DELETE", "/v1/hooks/h1", "admin-key").status == 404
