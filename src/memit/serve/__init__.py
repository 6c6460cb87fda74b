"""``memit serve``: a local web page to edit a model, probe it, compare, revert and export.

The server listens on loopback unless it is told otherwise in so many words: a page that edits
the weights of a model, and hands them out, is not something to expose by accident.
"""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK = "127.0.0.1"


class BindError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_address(host: str | None, *, explicit: bool) -> str:
    """Where to listen: loopback by default; anywhere else only when ``explicit`` (``--host``)."""
    host = host or LOOPBACK
    if not is_loopback(host) and not explicit:
        raise BindError(f"refusing to listen on {host}: only loopback without --host (pass --host {host} to mean it)")
    return host


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def make_server(session, host: str | None = None, port: int = 8765, *, explicit_host: bool = False,
                max_upload: int | None = None, log_level: str = "warning"):
    """A uvicorn server for ``session``; ``.run()`` serves until interrupted."""
    import uvicorn

    from memit.serve.app import MAX_UPLOAD_BYTES, create_app

    host = bind_address(host, explicit=explicit_host)
    app = create_app(session, max_upload=max_upload or MAX_UPLOAD_BYTES)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))
