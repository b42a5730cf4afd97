"""A real gRPC server on loopback in front of the engine's ingest, for clients' retries and TLS:
it refuses the calls it is told to refuse, each with its status (and a `retry-after` hint if
given), and forwards every other call's bytes to the engine and the engine's answer back."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

SERVICE = "occupancy.v1.IngestService"
METHODS = ("SendPings", "SendDoorEvents")


class Gate:
    """`refusals`: (status, retry-after seconds or None) for the first calls, in order. `tls`:
    (certificate, key) files to serve TLS with, and a client CA to ask certificates of."""

    def __init__(
        self,
        upstream: str,
        refusals: list[tuple[grpc.StatusCode, str | None]] = (),
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
    ):
        self.refusals = list(refusals)
        self.calls: list[tuple[str, str]] = []  # (method, status name), in arrival order
        self._upstream = grpc.insecure_channel(upstream)
        self.server = grpc.server(ThreadPoolExecutor(4))
        handlers = {m: grpc.unary_unary_rpc_method_handler(self._handler(m)) for m in METHODS}
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            cert, key = tls
            credentials = grpc.ssl_server_credentials(
                [(key.read_bytes(), cert.read_bytes())],
                root_certificates=client_ca.read_bytes() if client_ca else None,
                require_client_auth=client_ca is not None,
            )
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()
        self.target = f"127.0.0.1:{self.port}"

    def _handler(self, method: str):
        forward = self._upstream.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            if self.refusals:
                code, hint = self.refusals.pop(0)
                self.calls.append((method, code.name))
                if hint is not None:
                    context.set_trailing_metadata((("retry-after", hint),))
                context.abort(code, "refused by the gate")
            metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
            try:
                answer = forward(request, metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                self.calls.append((method, exc.code().name))
                context.abort(exc.code(), exc.details())
            self.calls.append((method, "OK"))
            return answer

        return handle

    def stop(self) -> None:
        self.server.stop(0)
        self._upstream.close()
