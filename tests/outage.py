"""A TCP proxy on loopback whose link can be cut and restored: an object-store outage on demand.

Clients point ``AWS_ENDPOINT_URL`` at the proxy; ``down()`` resets every open connection and
refuses new ones (as a restarting server or a partitioned network does), ``up()`` listens again on
the same port. ``down_on(prefix)`` cuts the link by itself the moment a client sends a request that
starts with ``prefix`` (b"PUT /bucket/key"), before the request reaches the server: an outage that
begins at a chosen write, whatever the timing. The real S3 server behind it is never touched.
"""

import contextlib
import socket
import threading

from loopback.ports import free_port


class CuttableProxy:
    def __init__(self, target_port: int):
        self.port, self.target = free_port(), target_port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._trigger: bytes | None = None
        self.up()

    def down_on(self, prefix: bytes) -> None:
        self._trigger = prefix

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is None:
                return  # already down
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
            listener.close()
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the link is down
            with self._lock:
                if self._listener is not listener:  # the link went down while this one was accepted
                    client.close()
                    return
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target))
                except OSError:
                    client.close()
                    return
                self._connections |= {client, upstream}
            for source, sink, requests in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, requests), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if requests and self._trigger is not None and data.startswith(self._trigger):
                    self._trigger = None
                    self.down()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
