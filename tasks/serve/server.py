"""Running the service: the listening socket bound before anything is printed (a busy port is one
`error:` line, `--port 0` says the port it got), and uvicorn's HTTP/1.1 protocol with request-size
limits that answer instead of resetting.

uvicorn's h11 protocol answers a request line or headers over h11's 16 KiB buffer with a 400 and then
closes the socket while the client is still sending: the kernel turns that close into a reset and the
client sees no answer at all. Here the limit is MAX_REQUEST_HEAD (256 KiB: a 100,000-character query
reaches the app and gets its JSON 400), and beyond it the answer is a JSON 413 followed by a lingering
close: our side of the connection is shut, what the client still sends is read and dropped for up to
LINGER_SECONDS, so the client reads the answer.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tasks.core.errors import TbprError

MAX_REQUEST_HEAD = 256 * 1024  # bytes of request line + headers
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024  # dropped at most, then the socket is closed


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) (port 0: any free one); TbprError when the address is
    busy, not this machine's, or not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise TbprError(
            f"cannot listen on {host!r}: {exc.strerror}; pass --host 127.0.0.1 or an address of this machine"
        ) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of a previous run: fine
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise TbprError(
            f"cannot listen on {host}:{port} ({exc.strerror}); another process uses that port: stop it, "
            "or pass another --port (0: any free port)"
        ) from exc
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    """`http://HOST:PORT/` of a bound socket, with the port it really got."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol: an over-long or malformed request head gets a JSON answer (413 or 400)
    and a lingering close instead of a reset."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self._dropping: int | None = None  # bytes dropped since the answer, while lingering

    def data_received(self, data: bytes) -> None:
        if self._dropping is not None:  # lingering: read and drop
            self._dropping += len(data)
            if self._dropping > LINGER_BYTES:
                self.transport.close()
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        too_long = len(self.conn.trailing_data[0]) > MAX_REQUEST_HEAD
        status = 413 if too_long else 400
        message = (
            f"the request line and headers are over {MAX_REQUEST_HEAD:,} bytes; send a shorter query"
            if too_long
            else "malformed HTTP request"
        )
        body = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        connection = h11.Connection(h11.SERVER)  # self.conn is in its error state: a fresh one writes
        connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        connection.next_event()
        reason = b"Content Too Large" if too_long else b"Bad Request"
        self.transport.write(
            connection.send(h11.Response(status_code=status, headers=headers, reason=reason))
        )
        self.transport.write(connection.send(h11.Data(data=body)))
        self.transport.write(connection.send(h11.EndOfMessage()))
        self._dropping = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
