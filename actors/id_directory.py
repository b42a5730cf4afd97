"""The id directory: the only place where raw device ids live (pseudonym -> raw id, in Redis)."""

import redis
import redis.asyncio

from engine.pseudonym import pseudonym, pseudonym_str

IDS = "occ:ids"


class IdDirectory:
    """Written by the ingest handlers on first sight of an id (`record_async`); read for admin
    answers; `forget` cuts the tie between a person and the device's anonymous history."""

    def __init__(self, client: redis.Redis, secret: bytes):
        self.client = client
        self.secret = secret

    def resolve(self, key: int) -> str | None:
        raw = self.client.hget(IDS, pseudonym_str(key))
        return raw.decode() if raw else None

    def resolve_many(self, keys: list[int]) -> dict[int, str | None]:
        if not keys:
            return {}
        raws = self.client.hmget(IDS, [pseudonym_str(k) for k in keys])
        return {k: (r.decode() if r else None) for k, r in zip(keys, raws, strict=True)}

    def forget(self, device_id: str) -> bool:
        """True if the id was in the directory."""
        return bool(self.client.hdel(IDS, pseudonym_str(pseudonym(self.secret, device_id))))


async def record_async(client: redis.asyncio.Redis, new_ids: dict[str, str]) -> None:
    """{pseudonym hex: raw id} for ids an ingest handler sees for the first time; awaited
    beside the shard calls of the batch, not before them."""
    if new_ids:
        await client.hset(IDS, mapping=new_ids)
