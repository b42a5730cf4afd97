"""The history actor as its callers see it: its name and the errors its answers raise."""

NAME = "history"


class HistoryUnavailable(Exception):
    """The store cannot be written or read now; snapshots wait in Redis."""


class HistoryTimeout(Exception):
    """A history query ran out of its time (ClickHouse's max_execution_time)."""
