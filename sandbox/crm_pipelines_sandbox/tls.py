"""A self-signed certificate for a simulator on loopback, for clients that only speak HTTPS.

simple-salesforce builds every URL as ``https://<instance>``, as Salesforce itself only serves TLS:
a test points it at a simulator serving TLS with this certificate and trusts the certificate in the
``requests`` session it hands the client (``session.verify = <certificate file>``).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["LoopbackCertificate", "loopback_certificate"]


@dataclass(frozen=True)
class LoopbackCertificate:
    """A certificate for ``127.0.0.1`` and ``localhost`` and its key, as PEM files."""

    certificate: Path  # also the CA file a client trusts: the certificate signs itself
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context serving this certificate (set it as a simulator's ``tls_context``)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.key)
        return context


def loopback_certificate(directory: Path, *, days: int = 2) -> LoopbackCertificate:
    """Write a fresh self-signed certificate for loopback and its key into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crm-pipelines sandbox")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "loopback.pem", directory / "loopback.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return LoopbackCertificate(cert_path, key_path)
