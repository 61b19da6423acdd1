"""A static HTTP server on 127.0.0.1 for tests of streamed data, with the validators a test asks for."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with a strong ETag (the sha256 of the bytes), a weak one, or none (``server.etags``).

    ``/hub/<rev>/...`` mimics the Hugging Face hub: a 302 to the file that carries the ETag and size as
    ``X-Linked-Etag`` / ``X-Linked-Size``; the file itself then answers without an ETag, as a CDN may.
    ``server.head=False`` refuses HEAD requests (405). Paths in ``server.stall`` get no answer until the test ends; those in ``server.cut`` announce their whole
    size and send half of it.
    """

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append((self.command, self.path))
        if self.command == "HEAD" and not self.server.head:
            self.send_error(405)
            return
        if self._redirected():
            return
        stall = self.server.stall + (self.server.stall_get if self.command == "GET" else [])
        if any(self.path.endswith(p) for p in stall):
            self.server.release.wait(30)
            return
        if self.command == "GET" and any(self.path.endswith(p) for p in self.server.cut):
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        super().do_GET()

    do_HEAD = do_GET

    def _redirected(self) -> bool:
        if not self.path.startswith("/hub/"):
            return False
        rel = self.path.split("/", 3)[3]
        file = Path(self.directory) / rel
        self.send_response(302)
        self.send_header("Location", f"/{rel}")
        if file.is_file():
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(file.read_bytes()).hexdigest()}"')
            self.send_header("X-Linked-Size", str(file.stat().st_size))
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def end_headers(self):
        file = Path(self.translate_path(self.path))
        if file.is_file() and self.server.etags != "none" and not self.path.startswith("/hub/"):
            tag = f'"{hashlib.sha256(file.read_bytes()).hexdigest()[:16]}"'
            self.send_header("ETag", "W/" + tag if self.server.etags == "weak" else tag)
        super().end_headers()


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    """A server on 127.0.0.1 (a free port) serving ``folder`` (``server.url``, ``server.folder``) while the block runs;
    then stopped, its stalled requests released."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    httpd.daemon_threads = True
    httpd.folder, httpd.etags, httpd.stall, httpd.cut, httpd.requests = folder, "strong", [], [], []
    httpd.head, httpd.stall_get = True, []
    httpd.release = threading.Event()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
