"""Certificates for tests: a CA of their own, and client certificates it signs (mutual TLS)."""

from pathlib import Path

from occupancy.tls import key_pem, new_ca, pem_encoding, sign_cert
from state.private_files import write_private


def client_pair(folder: Path, ca_pem: Path, ca_key_pem: Path, name: str) -> tuple[Path, Path]:
    """A client certificate and key signed by the CA in `ca_pem`/`ca_key_pem` (for mutual
    TLS: devices or gateways each get one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), password=None)
    cert, key = sign_cert(ca, ca_key, name, [], server=False)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_text(cert)
    write_private(key_path, key)
    return cert_path, key_path


def make_ca(folder: Path, name: str = "occupancy test CA") -> tuple[Path, Path]:
    """A CA of its own in `folder`: (certificate, key) paths."""
    ca, key = new_ca(name)
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    cert_path.write_text(ca.public_bytes(pem_encoding()).decode())
    write_private(key_path, key_pem(key))
    return cert_path, key_path


def server_pair(folder: Path, ca_pem: Path, ca_key_pem: Path) -> tuple[Path, Path]:
    """A server certificate for localhost and 127.0.0.1 and its key, signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), password=None)
    cert, key = sign_cert(ca, ca_key, "localhost", ["localhost"], server=True)
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_text(cert)
    write_private(key_path, key)
    return cert_path, key_path
