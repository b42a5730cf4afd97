"""Which failed inserts are ClickHouse refusing the block (dead-letter) and which are outages."""

from actors.archive import refused

CHDB = "Code: {code}. DB::Exception: {text}. ({name})"


def test_refusals_of_the_block_itself():
    assert refused(RuntimeError(CHDB.format(code=469, text="Constraint violated", name="X")))
    assert refused(RuntimeError(CHDB.format(code=27, text="Cannot parse input", name="X")))
    partitions = "Too many partitions for single INSERT block (more than 100)"
    assert refused(RuntimeError(CHDB.format(code=252, text=partitions, name="TOO_MANY_PARTS")))


def test_outages_and_overload_are_retried_whole():
    assert not refused(ConnectionRefusedError("[Errno 111] Connection refused"))
    assert not refused(TimeoutError("timed out"))
    merges = "Too many parts (300). Merges are processing significantly slower than inserts"
    assert not refused(RuntimeError(CHDB.format(code=252, text=merges, name="TOO_MANY_PARTS")))
    memory = "Memory limit (total) exceeded"
    assert not refused(RuntimeError(CHDB.format(code=241, text=memory, name="MEMORY")))
    server = "HTTPDriver for http://h:8123 received ClickHouse error code 159\n Code: 159. DB::Ex"
    assert not refused(RuntimeError(server))
