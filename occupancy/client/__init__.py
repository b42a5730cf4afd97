"""The engine's client library: gRPC ingest with batching and retries, and the HTTP API with
typed answers, each also for asyncio. It reads the same `OCC_*` settings as the CLI
(occupancy/client/config.py) and never imports Ray.

    from occupancy.client import IngestClient, QueryClient

    with IngestClient() as ingest:
        ingest.send("phone-42", 52.6638, -8.6267)
    with QueryClient() as api:
        print(api.top(n=5).cells)
"""

from occupancy.client.batching import Ack, Rejected
from occupancy.client.errors import ApiError, ClientError, IngestError, Unreachable
from occupancy.client.ingest import IngestClient
from occupancy.client.ingest_async import AsyncIngestClient
from occupancy.client.query import AsyncQueryClient, QueryClient
from occupancy.client.retry import Backoff
from occupancy.client.sse import Counts, StreamError

__all__ = [
    "Ack",
    "ApiError",
    "AsyncIngestClient",
    "AsyncQueryClient",
    "Backoff",
    "ClientError",
    "Counts",
    "IngestClient",
    "IngestError",
    "QueryClient",
    "Rejected",
    "StreamError",
    "Unreachable",
]
