"""Where a client finds the engine, its key and the TLS to trust when it is not told: the same
`OCC_*` settings and data-dir files as the CLI (`occupancy simulate`, `occupancy top`, ...).

- the gRPC target is `127.0.0.1:OCC_GRPC_PORT`, the API `http(s)://127.0.0.1:OCC_HTTP_PORT`;
- the key is `OCC_INGEST_KEY` (ingest) or `OCC_API_KEY` (queries), else the data dir's
  bootstrap admin key (`<OCC_DATA_DIR>/admin.key`);
- TLS trusts `OCC_TLS_CA` (`system`: the system's CAs), else, while the data dir's engine runs
  with TLS, the CA it recorded (occupancy/tls.py); else gRPC is plaintext and HTTP follows the
  URL's scheme."""

import os
from pathlib import Path

from occupancy.client.errors import ClientError
from occupancy.settings import Settings
from occupancy.tls import local_scheme

SYSTEM = "system"  # OCC_TLS_CA's value for the system's CAs
INGEST_KEY, API_KEY = "OCC_INGEST_KEY", "OCC_API_KEY"

Trust = str | bool | None  # a CA file, True (the system's CAs), None or False (no TLS / default)


def settings(given: Settings | None = None) -> Settings:
    return given if given is not None else Settings.from_env()


def key(given: str | None, variable: str, s: Settings) -> str:
    """`given`, else the variable, else the data dir's admin key; ClientError without any."""
    found = given or os.environ.get(variable)
    if found:
        return found
    path = s.data_dir / "admin.key"
    if path.exists():
        return path.read_text().strip()
    raise ClientError(f"no key given (or {variable}) and no admin key in {s.data_dir}")


def _ca(value: str | bool) -> str | bool:
    return True if value is True or value == SYSTEM else value


def grpc_trust(tls_ca: Trust, s: Settings) -> str | bool | None:
    """The CA a gRPC channel trusts (True: the system's), or None for plaintext."""
    if tls_ca is False:
        return None
    if tls_ca is not None:
        return _ca(tls_ca)
    if s.tls_ca:
        return _ca(s.tls_ca)
    scheme, verify = local_scheme(s.data_dir)
    return verify if scheme == "https" else None


def http_base(url: str | None, tls_ca: Trust, s: Settings) -> tuple[str, str | bool]:
    """The API's base URL and what `verify` is for it (a CA file, or True: the system's)."""
    ca = (s.tls_ca or None) if tls_ca is None else tls_ca
    system = ca is True or ca == SYSTEM
    scheme, verify = local_scheme(s.data_dir, ca if isinstance(ca, str) and not system else "")
    return (url or f"{scheme}://127.0.0.1:{s.http_port}").rstrip("/"), True if system else verify


def grpc_credentials(ca: str | bool, cert: str | None = None, key_file: str | None = None):
    """Channel credentials trusting `ca` (True: the system's CAs), with a client certificate
    and key for mutual TLS when both are given."""
    import grpc

    root = Path(ca).read_bytes() if isinstance(ca, str) else None
    if bool(cert) != bool(key_file):
        raise ClientError("give the client certificate and its key together")
    if cert:
        return grpc.ssl_channel_credentials(
            root, Path(key_file).read_bytes(), Path(cert).read_bytes()
        )
    return grpc.ssl_channel_credentials(root)
