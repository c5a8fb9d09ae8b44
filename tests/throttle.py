"""An HTTP proxy on loopback that answers ``503 SlowDown`` to a share of the requests, as S3 does past
its request rate per prefix (about 3,500 writes or 5,500 reads a second).

Clients point ``AWS_ENDPOINT_URL`` at ``proxy.endpoint``; every ``every``-th request (counted over all
connections) is refused with S3's own error document and never reaches the real server; the others
are forwarded unchanged (the Host header too, which the request's signature covers). ``refused`` is
how many it has refused.
"""

import contextlib
import http.client
import http.server
import threading

from loopback.ports import free_port

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class ThrottlingProxy:
    def __init__(self, target_port: int, every: int):
        self.every, self.target = every, target_port
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.requests = self.refused = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _refuses_next(self) -> bool:
        with self._lock:
            self.requests += 1
            refuse = self.requests % self.every == 0
            self.refused += refuse
            return refuse

    def _handler(self) -> type:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue answered before the body

            def log_message(self, *_) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self) -> None:
                body = self._body()
                if proxy._refuses_next():
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP:
                            self.send_header(key, value)
                    length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

        return Handler


@contextlib.contextmanager
def throttling(target_port: int, every: int):
    proxy = ThrottlingProxy(target_port, every)
    try:
        yield proxy
    finally:
        proxy.close()
