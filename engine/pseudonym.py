"""Device pseudonyms: raw ids never enter engine state.

A pseudonym is a random 64-bit number drawn the first time a raw id is seen and kept in the id
directory (raw id <-> pseudonym); nothing computes it from the raw id, so once the directory
forgets the pair, nobody (an operator knowing the secret and the phone number included) can
find the device's history again.
"""

import random
import secrets


def new_pseudonym(rng: random.Random | None = None) -> int:
    """A random nonzero unsigned 64-bit int (from `rng` if given: repeatable runs)."""
    while True:
        key = rng.getrandbits(64) if rng is not None else secrets.randbits(64)
        if key:
            return key


def pseudonym_str(key: int) -> str:
    """The 16-hex-digit form that viewers and exports see."""
    return f"{key:016x}"


def parse_pseudonym(text: str) -> int:
    if len(text) != 16:
        raise ValueError("a pseudonym is 16 hex digits")
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError("a pseudonym is 16 hex digits") from None


class Directory:
    """The id directory in memory, for the engine in one process (`LocalCluster`, the
    benchmarks; a replay looks raw ids up in the Redis directory instead): a raw id gets a
    random pseudonym on first sight and keeps it until it is forgotten; drawn from a seeded
    generator, so that a run can be repeated."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rng = random.Random(seed)
        self._keys: dict[str, int] = {}
        self._taken: set[int] = set()

    def key(self, device_id: str) -> int:
        """The id's pseudonym, drawn now if it has none."""
        key = self._keys.get(device_id)
        if key is None:
            key = self.fresh()
            self._keys[device_id] = key
        return key

    def fresh(self) -> int:
        """A pseudonym no raw id of this directory has had."""
        while True:
            key = new_pseudonym(self._rng)
            if key not in self._taken:
                self._taken.add(key)
                return key

    def lookup(self, device_id: str) -> int | None:
        return self._keys.get(device_id)

    def forget(self, device_id: str) -> int | None:
        """Drop the id; its pseudonym (None if unknown). The id's next sighting draws anew."""
        return self._keys.pop(device_id, None)

    def __len__(self) -> int:
        return len(self._keys)

    def snapshot(self) -> dict:
        return {"seed": self.seed, "keys": self._keys, "taken": sorted(self._taken)}

    @classmethod
    def restore(cls, state: dict) -> "Directory":
        """The same pairs; later draws from a generator seeded with the draws so far."""
        d = cls(state["seed"])
        d._keys = dict(state["keys"])
        d._taken = set(state["taken"])
        d._rng = random.Random(f"{d.seed}:{len(d._taken)}")
        return d
