"""TLS for the offload link: the server's context, the client's verification, certificate pins."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

from edge.errors import ConfigError


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """TLS 1.2+ server context from PEM files (a self-signed pair is fine: the glasses pin it)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise ConfigError(f"--cert/--key: {exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"--cert {cert} / --key {key}: not a matching PEM certificate and key ({exc})") from None
    return context


def fingerprint(cert_pem: Path | str) -> str:
    """SHA-256 of a PEM certificate's DER bytes, hex: the value for offload.pin_sha256."""
    try:
        der = ssl.PEM_cert_to_DER_cert(Path(cert_pem).read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{cert_pem}: not a PEM certificate ({exc})") from None
    return hashlib.sha256(der).hexdigest()


def client_ssl(ca_file: str = "", pin: bytes | None = None) -> Any:
    """What aiohttp's `ssl=` takes: a certificate pin (checked before any byte of the request is sent),
    a context trusting `ca_file`, or the system CAs."""
    import aiohttp

    if pin is not None:
        return aiohttp.Fingerprint(pin)
    if ca_file:
        path = Path(ca_file).expanduser()
        try:
            return ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"offload.ca_file {path}: cannot load ({exc})") from None
    return ssl.create_default_context()
