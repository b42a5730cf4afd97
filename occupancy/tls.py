"""TLS for the two planes a client reaches: gRPC ingest and the HTTP API.

`OCC_TLS_CERT` and `OCC_TLS_KEY` (PEM files) turn it on for both; `OCC_TLS_CLIENT_CA` makes
gRPC ingest ask every client for a certificate that CA signed (mutual TLS). The ingest
handlers read the files themselves (their paths travel in the topology, never their
contents). HTTP: with the `haproxy` ingress, Serve's HAProxy terminates TLS (its frontend's
`bind` gets `ssl crt`, see occupancy/http_ingress.py); with `proxy`, Serve's Python proxy does
(its `ssl_certfile`/`ssl_keyfile`); `direct` hands replicas' ports to a load balancer, which
must terminate TLS itself.

`occupancy up --tls-self-signed` makes a CA and a server certificate for it in
`<data dir>/tls/` (kept, and used again by the next start); clients trust `ca.pem`.
A marker file there (`trust`) tells the CLI of this data dir which scheme and CA to use.
"""

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from state.private_files import private_dir, write_private

SUBDIR = "tls"
TRUST = "trust"  # written while an engine with TLS runs from the data dir: the CA to trust
_DAYS = 825  # what browsers accept for a server certificate


@dataclass(frozen=True)
class Tls:
    cert: str = ""
    key: str = ""
    client_ca: str = ""

    @property
    def on(self) -> bool:
        return bool(self.cert)

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.cert, self.key, self.client_ca)


class BadTls(ValueError):
    """A TLS setting that cannot work: one of cert and key alone, a file that does not load."""


def check(tls: Tls) -> Tls:
    """`tls` with absolute paths, once each file is read and the key matches the certificate."""
    if bool(tls.cert) != bool(tls.key):
        raise BadTls("set OCC_TLS_CERT and OCC_TLS_KEY together")
    if tls.client_ca and not tls.cert:
        raise BadTls("OCC_TLS_CLIENT_CA needs OCC_TLS_CERT and OCC_TLS_KEY")
    if not tls.on:
        return tls
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(Path(tls.cert).read_bytes())
        key = serialization.load_pem_private_key(Path(tls.key).read_bytes(), password=None)
        if tls.client_ca:
            x509.load_pem_x509_certificates(Path(tls.client_ca).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise BadTls(f"TLS files do not load: {exc}") from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise BadTls("OCC_TLS_KEY is not the key of OCC_TLS_CERT")
    return Tls(*(str(Path(p).resolve()) if p else "" for p in tls.as_tuple()))


def self_signed(data_dir: Path) -> tuple[Tls, Path]:
    """A CA and a server certificate signed by it in `<data dir>/tls/` (made once, for
    localhost, 127.0.0.1 and this host's name): the server's Tls and the CA clients trust."""
    folder = private_dir(private_dir(data_dir) / SUBDIR)
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    if not (ca_path.exists() and cert_path.exists() and key_path.exists()):
        ca, ca_key = new_ca()
        cert, key = _server(ca, ca_key)
        write_private(key_path, key)
        cert_path.write_text(cert)
        ca_path.write_text(ca.public_bytes(pem_encoding()).decode())
    return Tls(str(cert_path.resolve()), str(key_path.resolve())), ca_path.resolve()


def trust_marker(data_dir: Path) -> Path:
    return data_dir / SUBDIR / TRUST


def record_trust(data_dir: Path, tls: Tls, ca: str) -> None:
    """Tell the CLI of `data_dir` how to reach the engine: https trusting `ca` (empty: the
    system's CAs) while it has TLS; plain http (no marker) otherwise."""
    marker = trust_marker(data_dir)
    if not tls.on:
        marker.unlink(missing_ok=True)
        return
    private_dir(marker.parent)
    marker.write_text(str(Path(ca).resolve()) if ca else "")


def local_scheme(data_dir: Path, ca: str = "") -> tuple[str, str | bool]:
    """The scheme and `verify` for a client of this data dir's engine: https, trusting `ca`
    (OCC_TLS_CA), else the CA `occupancy up` recorded, else the system's CAs, while it runs
    with TLS; else http."""
    marker = trust_marker(data_dir)
    if not marker.exists():
        return "http", ca or True
    return "https", ca or marker.read_text().strip() or True


def pem_encoding():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM


def key_pem(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def new_ca(name: str = "occupancy self-signed CA"):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server(ca, ca_key) -> tuple[str, str]:
    host = socket.gethostname()
    names = ["localhost", host] if host and host != "localhost" else ["localhost"]
    return sign_cert(ca, ca_key, "localhost", names, server=True)


def sign_cert(ca, ca_key, common_name: str, dns: list[str], server: bool) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        alt = [x509.DNSName(n) for n in dns] + [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(pem_encoding()).decode(), key_pem(key)
