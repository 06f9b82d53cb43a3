"""Misbehaving network peers on 127.0.0.1, for store-error tests.

Each runs on a thread and listens on a free port; use them as context managers.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from types import TracebackType
from typing import Any


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []

    def __enter__(self) -> Any:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._open.append(conn)
            thread = threading.Thread(target=self.handle, args=(conn,), daemon=True)
            thread.start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError


class Blackhole(_Listener):
    """Accepts connections, reads requests and never answers."""

    def handle(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass


class CuttingProxy(_Listener):
    """Forwards TCP to ``upstream_port`` and cuts each connection once
    ``cut_after`` bytes of responses have passed through it."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0

    def handle(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._open.append(upstream)

        def requests_up() -> None:
            try:
                while data := conn.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=requests_up, daemon=True).start()
        passed = 0
        try:
            while data := upstream.recv(65536):
                if passed + len(data) > self.cut_after:
                    conn.sendall(data[: self.cut_after - passed])
                    self.cuts += 1
                    break
                conn.sendall(data)
                passed += len(data)
        except OSError:
            pass
        for s in (conn, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>test</RequestId></Error>"
)


class _HttpStub:
    """An HTTP server on a free port of 127.0.0.1 that answers every request
    with :meth:`answer`'s status, content type and body."""

    def answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self) -> None:
                status, kind, body = stub.answer(
                    self.command, self.path, dict(self.headers)
                )
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _reply

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class AccessDenied(_HttpStub):
    """Answers every request as S3 does for a caller without permission: 403
    with an AccessDenied error document."""

    def answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        return 403, "application/xml", _ACCESS_DENIED


class Recorder(_HttpStub):
    """Answers every request with ``body`` and records the path and headers of
    each one."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests: list[tuple[str, dict[str, str]]] = []

    def answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        self.requests.append((path, headers))
        return 200, "application/octet-stream", self.body


class HtmlPage(_HttpStub):
    """Answers every request with 200 and an HTML page, as a login proxy or a
    wrongly configured endpoint does."""

    PAGE = b"<html><body><h1>Please sign in</h1></body></html>"

    def answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        return 200, "text/html", self.PAGE


class EndlessListing(_HttpStub):
    """A fake artifact proxy whose listing of any directory holds one more
    directory, for ever."""

    def answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        return 200, "application/json", b'{"files": [{"path": "d", "is_dir": true}]}'
