"""A scale request is priced before anything starts."""

import pytest

from cluster.fit import DoesNotFit, check

MIB = 2**20


def test_actors_that_fit_in_the_headroom_pass_and_more_are_refused_with_the_figures():
    check({"user shards": (2, 300 * MIB), "ingest handlers": (1, 200 * MIB)}, 1000 * MIB)
    with pytest.raises(DoesNotFit) as refused:
        check({"user shards": (21, 300 * MIB), "ingest handlers": (61, 200 * MIB)}, 8 * 1024 * MIB)
    message = str(refused.value)
    assert "21 user shards × 300 MiB" in message and "61 ingest handlers × 200 MiB" in message
    assert "18.1 GiB" in message and "8.0 GiB available" in message


def test_shrinking_needs_nothing():
    check({"user shards": (-3, 300 * MIB), "cell shards": (0, 100 * MIB)}, 0)
