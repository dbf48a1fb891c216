"""A faulty network in front of the local S3 server, on 127.0.0.1: it forwards requests to moto,
or fails the next N of them with 503 SlowDown (what S3 answers when throttling), or hangs them
forever (accepts, reads the request, never answers) until it is healed or stopped.

Hangs are infinite on purpose: a test's outcome then cannot depend on how long a normal request
or step takes on the machine that runs it.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class FaultyS3:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.fail_next = 0
        self.hang = False
        self.hang_when = lambda method, path: True  # which requests hang while `hang` is set
        self.requests: list[tuple[str, str]] = []
        self.failed = 0
        self.hung = threading.Event()  # set once a request is being held
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path))
                if outer.hang and outer.hang_when(self.command, self.path):
                    outer.hung.set()
                    outer._release.wait()  # never answered while the test runs
                    self.close_connection = True
                    return
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    outer.failed += 1
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(outer.upstream.hostname, outer.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = outer.upstream.netloc
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def heal(self) -> None:
        """Stop hanging; the requests held so far are dropped (their clients see a closed socket)."""
        self.hang = False
        self._release.set()

    def __enter__(self) -> FaultyS3:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.heal()
        self.server.shutdown()
        self.server.server_close()
