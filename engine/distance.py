"""Distance per device per UTC day, in little memory: most devices travel on one day only."""


class DistanceBook:
    """Metres per device and day. A device's latest day is one (day, metres) pair (~80 bytes
    where a dict per device took ~300); the days before it, which only devices seen across
    midnight have, go to a dict of their own."""

    def __init__(self) -> None:
        self._latest: dict[int, tuple[int, float]] = {}  # device -> (its latest day, metres)
        self._earlier: dict[int, dict[int, float]] = {}  # device -> {earlier day: metres}
        self._days: dict[int, int] = {}  # one int object per day, shared by the devices

    def add(self, device: int, day: int, meters: float) -> None:
        latest = self._latest.get(device)
        if latest is not None and latest[0] == day:  # the common case
            self._latest[device] = (latest[0], latest[1] + meters)
        else:
            self.put(device, day, self.get(device, day) + meters)

    def put(self, device: int, day: int, meters: float) -> None:
        """The device's metres on `day` are `meters` (whatever they were)."""
        latest = self._latest.get(device)
        if latest is None or latest[0] <= day:
            if latest is not None and latest[0] < day:
                self._earlier.setdefault(device, {})[latest[0]] = latest[1]
            self._latest[device] = (self._days.setdefault(day, day), meters)
        else:
            self._earlier.setdefault(device, {})[day] = meters

    def get(self, device: int, day: int) -> float:
        latest = self._latest.get(device)
        if latest is not None and latest[0] == day:
            return latest[1]
        return self._earlier.get(device, {}).get(day, 0.0)

    def of(self, device: int) -> dict[int, float]:
        """{day: metres} of the device."""
        days = dict(self._earlier.get(device, {}))
        if (latest := self._latest.get(device)) is not None:
            days[latest[0]] = latest[1]
        return days

    def __contains__(self, device: int) -> bool:
        return device in self._latest  # a device with earlier days has a latest one

    def pop(self, device: int) -> dict[int, float] | None:
        """Remove the device and return its {day: metres} (None: nothing was kept)."""
        if device not in self._latest:
            return None
        days = self.of(device)
        del self._latest[device]
        self._earlier.pop(device, None)
        return days

    def evict_before(self, day: int) -> None:
        """Forget the days before `day`."""
        for device, earlier in list(self._earlier.items()):
            for d in [d for d in earlier if d < day]:
                del earlier[d]
            if not earlier:
                del self._earlier[device]
        for device in [dev for dev, (d, _) in self._latest.items() if d < day]:
            del self._latest[device]  # its earlier days, earlier still, went above
        for d in [d for d in self._days if d < day]:
            del self._days[d]

    def rows(self) -> list[list]:
        """[device, day, metres] rows of every device."""
        return [[dev, d, m] for dev in self._latest for d, m in self.of(dev).items()]
