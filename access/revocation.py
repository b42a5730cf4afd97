"""The credentials generation: one Redis value that changes with every revocation.

Whatever revokes a credential (an API key, a device token, a device's tokens, a signing key)
writes the revocation, then a new random generation. Every process that checks credentials
reads the generation every CHECK_EVERY_S; when it differs from the one it holds, it drops what
it cached and reloads the revocations, so a revocation takes effect everywhere within that
period. A random value, not a counter: a Redis that lost its data and counted again could come
back to a value a process still holds.
"""

import secrets

import redis

from state.wal import PREFIX

GENERATION = f"{PREFIX}:auth:generation"
CHECK_EVERY_S = 0.25


def bump(client: redis.Redis) -> None:
    """Tell every process that credentials changed."""
    client.set(GENERATION, secrets.token_hex(8))


def current(client: redis.Redis) -> bytes | None:
    return client.get(GENERATION)
