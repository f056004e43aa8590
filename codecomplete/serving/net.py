"""Where our servers may listen: loopback only, whatever the user types."""

from __future__ import annotations

from codecomplete.errors import UserError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_loopback(spec: str) -> tuple[str, int]:
    """``127.0.0.1:PORT`` (or ``[::1]:PORT``, ``localhost:PORT``) → (host, port); any other host is refused."""
    host, _, port = spec.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host not in LOOPBACK_HOSTS:
        raise UserError(f"--tcp {spec}: only loopback addresses (127.0.0.1, ::1) are allowed")
    try:
        return host, int(port)
    except ValueError:
        raise UserError(f"--tcp {spec}: expected 127.0.0.1:PORT") from None
