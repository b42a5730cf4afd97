"""A stream's buffer is bounded in bytes as well as messages: big messages make the reader wait."""

import asyncio

import grpc

from actors.ingest_rpc import Inbox


class _Stream:
    """The messages a client sends on a stream, read one by one (what grpc.aio's context.read
    gives), counting how many were read."""

    def __init__(self, messages: list[bytes]):
        self.messages = list(messages)
        self.read_count = 0

    async def read(self):
        if not self.messages:
            return grpc.aio.EOF
        self.read_count += 1
        return self.messages.pop(0)


def test_the_reader_waits_once_a_megabyte_is_buffered():
    async def run():
        stream = _Stream([b"x" * 100_000] * 50)  # 5 MB of messages, each far below 16 MiB
        inbox = Inbox(limit=8_000, limit_bytes=1 << 20)
        reader = asyncio.ensure_future(inbox.fill(stream))
        await asyncio.sleep(0.05)
        assert stream.read_count == 11 and inbox.bytes == 1_100_000  # paused past 1 MiB
        batch, done = await inbox.take(5, 0.0, 1.0)
        assert len(batch) == 5 and not done
        await asyncio.sleep(0.05)
        assert inbox.bytes <= (1 << 20) + 100_000  # read on, up to the bound again
        taken = 5
        while not done:
            batch, done = await inbox.take(8, 0.0, 1.0)
            taken += len(batch)
        assert taken == 50 and inbox.bytes == 0
        await reader

    asyncio.run(run())
