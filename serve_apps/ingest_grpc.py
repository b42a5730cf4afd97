"""Ingest as a Ray Serve gRPC deployment: the alternative front end measured by bench/serve_grpc.py.

The engine's default front end is the `IngestServer` actor (actors/ingest.py); this deployment
runs the same `IngestCore` behind Serve's gRPC proxy or its direct ingress, for comparison.
"""

import grpc
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext

from actors.ingest_core import AuthError, IngestCore, ShardUnavailable
from protos.occupancy.v1 import occupancy_pb2 as pb
from state.topology import Topology

SERVICER = "protos.occupancy.v1.occupancy_pb2_grpc.add_IngestServiceServicer_to_server"


@serve.deployment(max_ongoing_requests=64)
class GrpcIngest:
    def __init__(self, topology: Topology):
        self.core = IngestCore(topology)

    async def SendPings(self, request: pb.SendPingsRequest, grpc_context: RayServegRPCContext):
        return await self._call(
            grpc_context, self.core.ingest_pings, request.pings, pb.SendPingsResponse
        )

    async def SendDoorEvents(
        self, request: pb.SendDoorEventsRequest, grpc_context: RayServegRPCContext
    ):
        return await self._call(
            grpc_context, self.core.ingest_doors, request.events, pb.SendDoorEventsResponse
        )

    async def _call(self, ctx: RayServegRPCContext, ingest, items, response):
        """`ingest(items)`'s ack, or an empty `response` with the call's failure."""
        try:
            caller = self.core.authenticate(
                dict(ctx.invocation_metadata()).get("authorization", "")
            )
            if (wait := self.core.admit(caller, len(items))) > 0:
                code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limited: {wait:.1f}"
            else:
                return await ingest(items, caller.device)
        except AuthError as exc:
            denied = grpc.StatusCode.PERMISSION_DENIED
            code, details = denied if exc.denied else grpc.StatusCode.UNAUTHENTICATED, str(exc)
        except ShardUnavailable as exc:
            code, details = grpc.StatusCode.UNAVAILABLE, str(exc)
        ctx.set_code(code)
        ctx.set_details(details)
        return response()
