"""TLS for explicit FTPS: the certificate, the pyOpenSSL context, and the self-signed pair for first starts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from core.config import TlsConfig
from core.errors import ConfigError
from core.log import event

log = logging.getLogger("lcsync.tls")

# Modern AEAD suites only; TLS 1.3 suites are not affected by this list.
_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS"


def certificate_paths(tls: TlsConfig, tls_dir: Path) -> tuple[Path, Path]:
    """The configured certificate and key, or the self-signed pair under ``tls_dir`` (generated when missing)."""
    if tls.cert is not None and tls.key is not None:
        return tls.cert, tls.key
    cert, key = tls_dir / "selfsigned.crt", tls_dir / "selfsigned.key"
    if not (cert.exists() and key.exists()):
        generate_self_signed(cert, key)
    return cert, key


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str | None = None) -> None:
    """Write a self-signed ECDSA certificate valid for ten years, for this host and loopback."""
    hostname = hostname or socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    event(log, "tls_self_signed_generated", cert=str(cert_path), hostname=hostname)


def make_context(cert: Path, key: Path) -> SSL.Context:
    """A server context: TLS 1.2 or newer, session resumption on so data connections can reuse the control session."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.set_cipher_list(_CIPHERS)
    try:
        context.use_certificate_chain_file(str(cert))
        context.use_privatekey_file(str(key))
        context.check_privatekey()
    except SSL.Error as exc:
        raise ConfigError(f"server.tls: cannot use certificate {cert} with key {key}: {exc}") from exc
    # Session caching lets a client resume the control connection's TLS session on each data connection, as
    # FileZilla and other clients expect (and as vsftpd's require_ssl_reuse enforces).
    context.set_session_id(b"lcsync")
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_timeout(3600)
    return context
