"""Serve a built site on the local network for a phone to open: HTTP, or HTTPS with a self-signed certificate
(the camera needs a secure context), with the URL printed as a QR code in the terminal.

Responses carry ``Cross-Origin-Opener-Policy``/``Cross-Origin-Embedder-Policy`` so the page is cross-origin
isolated and onnxruntime-web may use WebAssembly threads.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import shutil
import socket
import ssl
import subprocess
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from ..errors import UsageError
from .npm import cache_dir

CERT_FILE, KEY_FILE = "cert.pem", "key.pem"
CERT_DAYS = 30


class SiteHandler(SimpleHTTPRequestHandler):
    """Static files with the right MIME types, cross-origin isolation headers and no request log."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript",
                      ".wasm": "application/wasm", ".webmanifest": "application/manifest+json",
                      ".onnx": "application/octet-stream", ".tflite": "application/octet-stream"}

    def end_headers(self) -> None:
        """Add the isolation and cache headers to every response."""
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Stay quiet: one line per request would bury the URL."""


def lan_address() -> str:
    """This machine's address on the local network (the interface of the default route), else 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))  # UDP: picks a route, sends nothing
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def make_server(folder: Path, host: str, port: int, https: bool = False,
                cert_root: Optional[Path] = None) -> ThreadingHTTPServer:
    """A server for ``folder`` bound to ``host:port`` (port 0: any free port), TLS-wrapped when ``https``
    with a self-signed certificate kept under ``cert_root`` (default: the runtime cache folder).

    Raises:
        UsageError: the address cannot be bound.
    """
    handler = functools.partial(SiteHandler, directory=str(folder))
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pass another --port") from None
    if https:
        cert, key = ensure_certificate(cert_root or cache_dir(), [host, lan_address()])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def ensure_certificate(root: Path, hosts: Sequence[str]) -> Tuple[Path, Path]:
    """A self-signed certificate and key for ``hosts`` (and localhost), made once per set of host names and
    reused from ``root/tls-<hash>/``.

    Uses the ``cryptography`` package when installed, else the ``openssl`` command.

    Raises:
        UsageError: neither is available, or openssl fails.
    """
    names = sorted({*hosts, "127.0.0.1", "localhost"} - {"0.0.0.0", ""})
    folder = root / f"tls-{hashlib.sha256(' '.join(names).encode()).hexdigest()[:12]}"
    cert, key = folder / CERT_FILE, folder / KEY_FILE
    if cert.is_file() and key.is_file():
        return cert, key
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import cryptography  # noqa: F401 - probe only
    except ImportError:
        _openssl_certificate(cert, key, names)
    else:
        _cryptography_certificate(cert, key, names)
    key.chmod(0o600)
    return cert, key


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _openssl_certificate(cert: Path, key: Path, names: Sequence[str]) -> None:
    if shutil.which("openssl") is None:
        raise UsageError('--https needs the openssl command or the cryptography package (pip install cryptography)')
    alt = ",".join(f"IP:{n}" if _is_ip(n) else f"DNS:{n}" for n in names)
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                           str(cert), "-days", str(CERT_DAYS), "-subj", "/CN=slidelite web", "-addext",
                           f"subjectAltName={alt}"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = " ".join(proc.stderr.split())[:200]
        raise UsageError(f"openssl cannot make a self-signed certificate ({message})")


def _cryptography_certificate(cert: Path, key: Path, names: Sequence[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slidelite web")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
                   .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                   .sign(private, hashes.SHA256()))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def qr_text(url: str) -> Optional[str]:
    """The URL as a QR code drawn with terminal characters, or None when ``segno`` is not installed."""
    try:
        import segno
    except ImportError:
        return None
    import io

    buffer = io.StringIO()
    segno.make(url, error="l").terminal(out=buffer, compact=True)
    return buffer.getvalue()
