"""uvicorn's httptools protocol with a bound on a request's head (request line and headers).

httptools buffers a header until it ends, so a client could make a worker hold a 20 MB
header (or a 2 GB one); h11's `h11_max_incomplete_event_size` bounds it but answers 400
and parses slower. Past CHURN_MAX_HEADER_BYTES (default 64 KiB) this answers 431 Request
Header Fields Too Large and closes the connection, before the parser buffers more."""

from __future__ import annotations

import json
import logging
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("churn.serve")
DEFAULT_MAX_HEADER_BYTES = 65_536
HEAD_END = b"\r\n\r\n"


def max_header_bytes() -> int:
    return int(os.environ.get("CHURN_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES))


class BoundedHeadProtocol(HttpToolsProtocol):
    """HttpToolsProtocol counting the bytes of each request head as they arrive."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_head = max_header_bytes()
        self._refused = False
        self._new_head()

    def _new_head(self) -> None:
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def data_received(self, data: bytes) -> None:
        if self._refused:  # bytes still arriving on a refused connection are dropped
            return
        if self._in_head:
            room = self.max_head - self._head_bytes
            if len(data) > room:  # over the limit unless the head ends within it
                if HEAD_END not in self._tail + data[: max(room, 0)]:
                    self._refuse()
                    return
            else:
                self._head_bytes += len(data)
                self._tail = (self._tail + data)[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._new_head()

    def _refuse(self) -> None:
        body = json.dumps({"detail": f"request line and headers over {self.max_head} bytes "
                                     "(CHURN_MAX_HEADER_BYTES)"}).encode()  # fmt: skip
        log.warning("431: a request head over %d bytes from %s", self.max_head, self.client)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()
        self._refused = True
