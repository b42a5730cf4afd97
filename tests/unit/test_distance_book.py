"""The compact distance book answers as a plain {device: {day: metres}} would."""

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.distance import DistanceBook

DAY = 86_400_000
devices = st.integers(1, 4)
days = st.integers(0, 4).map(lambda d: 19_000 * DAY + d * DAY)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), devices, days, st.floats(0.5, 1e4)),
        st.tuples(st.just("put"), devices, days, st.floats(0.5, 1e4)),
        st.tuples(st.just("pop"), devices),
        st.tuples(st.just("evict"), days),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_book_answers_as_a_dict_of_days_would(steps):
    book, plain = DistanceBook(), {}
    for op, *args in steps:
        if op == "add":
            dev, day, m = args
            book.add(dev, day, m)
            plain.setdefault(dev, {})[day] = plain.get(dev, {}).get(day, 0.0) + m
        elif op == "put":
            dev, day, m = args
            book.put(dev, day, m)
            plain.setdefault(dev, {})[day] = m
        elif op == "pop":
            (dev,) = args
            assert book.pop(dev) == plain.pop(dev, None)
        else:
            (day,) = args
            book.evict_before(day)
            plain = {
                dev: kept
                for dev, ds in plain.items()
                if (kept := {d: m for d, m in ds.items() if d >= day})
            }
        for dev in range(1, 5):
            assert book.of(dev) == plain.get(dev, {})
            assert (dev in book) == (dev in plain)
            for day in {d for ds in plain.values() for d in ds}:
                assert book.get(dev, day) == plain.get(dev, {}).get(day, 0.0)
    rows = sorted(map(tuple, book.rows()))
    assert rows == sorted((dev, d, m) for dev, ds in plain.items() for d, m in ds.items())
