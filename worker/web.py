"""HTTP/1.1 for the small endpoints: one request reader and server, and one GET client.

The worker's ``/metrics`` ``/livez`` ``/readyz`` (``worker.http``) and the local platform's
``/metrics`` (``worker.platform.metrics``) are both a :class:`Server` given its routes; the tools
read ``/metrics`` pages and Prometheus' API with :func:`get`. Probes and scrapes are a few
requests a second, each answered from memory, so asyncio streams are enough: no threads, no
web framework.

Every server keeps the same limits, and every bad request gets a status that says what was
wrong and what is accepted:

- the request head (request line and header fields) is at most :data:`HEAD_LIMIT` bytes: 431;
- it must be complete within :data:`READ_TIMEOUT` seconds of the connection, however slowly it
  trickles in: 408;
- a head that is not ``METHOD /path HTTP/1.x`` with ``Name: value`` fields, or that stops
  before its blank line: 400;
- a path without a route: 404, naming the paths served;
- a method other than GET and HEAD: 405 with ``Allow``; HEAD answers the GET's header
  fields without its body.

Each answer closes its connection (``Connection: close``): scrapers and probes open one
connection per request, so keep-alive would only add state. The server does not read request
bodies: GET and HEAD have none, and any other method is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: the most bytes a request head may take, its blank line included
HEAD_LIMIT: Final = 8 * 1024
#: seconds a client has, from connecting, to send its whole request head
READ_TIMEOUT: Final = 5.0
#: seconds a client has to take an answer before the connection is dropped
WRITE_TIMEOUT: Final = 10.0
#: how long an error answer waits for the client to stop sending, so the answer is not lost
#: to a reset (closing a socket with unread bytes makes the kernel send RST)
LINGER: Final = 1.0
#: the methods every route answers
METHODS: Final = ("GET", "HEAD")
#: the most bytes :func:`get` accepts in one answer, head included
MAX_ANSWER: Final = 16 * 1024 * 1024
TEXT: Final = "text/plain; charset=utf-8"

_REQUEST_LINE: Final = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/1\.[01]")
_EXAMPLE: Final = "expected a request line like 'GET /metrics HTTP/1.1'"


@dataclass(frozen=True)
class Response:
    """What a route answers: a status, a body, and the body's media type."""

    status: int
    body: bytes
    content_type: str = TEXT


#: A route answers one path; HEAD requests get its answer without the body.
Route = Callable[[], Awaitable[Response]]


@dataclass(frozen=True)
class Request:
    """The parts of a request head the routes depend on."""

    method: str
    #: the request target without its query
    path: str


class RequestError(Exception):
    """A request answered with an error status before any route ran."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_head(lines: list[str]) -> Request:
    """The method and path of a head's lines (its blank line left out); RequestError 400 else."""
    if not lines or not (match := _REQUEST_LINE.fullmatch(lines[0])):
        shown = lines[0][:80] if lines else ""
        raise RequestError(400, f"not an HTTP/1.x request line: {shown!r}; {_EXAMPLE}")
    for field in lines[1:]:
        # A line starting with white space continues the previous one (obsolete line folding):
        # RFC 9112 lets a server refuse it, and a probe or scraper never sends it.
        name, colon, _ = field.partition(":")
        if not colon or not name or name != name.strip():
            raise RequestError(400, f"not a header field: {field[:80]!r}; expected 'Name: value'")
    return Request(match[1], _path_of(match[2]))


def _path_of(target: str) -> str:
    """The path of a request target: origin form (``/p?q``) or absolute form (``http://h/p``)."""
    if target.startswith("/"):
        return target.partition("?")[0]
    if target.startswith(("http://", "https://")):
        return urlsplit(target).path or "/"
    raise RequestError(400, f"not a request target: {target[:80]!r}; expected a path like /metrics")


def encode(response: Response, *, with_body: bool = True) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection; without the body for HEAD."""
    fields = [
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if response.status == HTTPStatus.METHOD_NOT_ALLOWED:
        fields.append(f"Allow: {', '.join(METHODS)}")
    head = ("\r\n".join(fields) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head


def error(status: int, reason: str) -> Response:
    """A plain-text error answer: the reason on one line."""
    return Response(status, f"{reason}\n".encode())


class Server:
    """Answers ``routes`` (path → route) over HTTP/1.1; ``start`` binds, ``close`` stops."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)
        self._server: asyncio.Server | None = None
        self._exchanges: set[asyncio.Task[object]] = set()

    async def start(self, host: str, port: int) -> None:
        """Listen; ``port`` 0 picks a free port (see :attr:`port`). OSError if it cannot."""
        # The reader's limit bounds one line of the head; _read_head bounds their sum.
        self._server = await asyncio.start_server(self._serve, host, port, limit=HEAD_LIMIT)

    @property
    def port(self) -> int:
        """The port actually bound."""
        if self._server is None:
            raise RuntimeError("the HTTP server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening; exchanges under way get LINGER seconds to finish, then are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        if self._exchanges:
            _, late = await asyncio.wait(set(self._exchanges), timeout=LINGER)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # start_server runs each connection in a task of its own
        self._exchanges.add(task)
        try:
            await self._exchange(reader, writer)
        finally:
            self._exchanges.discard(task)
            if not writer.transport.is_closing():  # cut short: never leave the socket open
                writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request and answer it."""
        try:
            request = await _receive(reader)
        except RequestError as exc:
            await _answer(writer, reader, error(exc.status, exc.reason))
            return
        if request is None:  # the client left before sending a request (a port probe)
            await _close(writer)
            return
        response = await self._respond(request)
        await _answer(writer, reader, response, with_body=request.method != "HEAD")

    async def _respond(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            served = ", ".join(sorted(self._routes))
            return error(404, f"no such path: {request.path[:80]}; this server answers {served}")
        if request.method not in METHODS:
            allowed = " and ".join(METHODS)
            return error(405, f"method {request.method} is not allowed; use {allowed}")
        try:
            return await route()
        except Exception:
            # A route's bug must not cost the client its answer: 500, and the stack in the log.
            log.exception("HTTP route %s failed", request.path)
            return error(500, f"{request.path} failed; the server's log says why")


async def _receive(reader: asyncio.StreamReader) -> Request | None:
    """The request; None when the client left without sending one; RequestError when bad."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            lines = await _read_head(reader)
    except TimeoutError as exc:
        reason = f"the request head did not arrive within {READ_TIMEOUT:g} s"
        raise RequestError(408, reason) from exc
    except ConnectionError:
        return None
    return None if lines is None else parse_head(lines)


async def _read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """The head's lines up to its blank line; None if the client sent nothing at all.

    Lines may end in CRLF or, as RFC 9112 lets a server accept, a bare LF. RequestError 431
    past :data:`HEAD_LIMIT` bytes, 400 when the connection ends inside the head.
    """
    too_large = f"the request head is over {HEAD_LIMIT} bytes"
    lines: list[str] = []
    size = 0
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:  # one line longer than the whole limit
            raise RequestError(431, too_large) from exc
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and size == 0:
                return None
            raise RequestError(400, "the connection ended inside the request head") from exc
        size += len(raw)
        if size > HEAD_LIMIT:
            raise RequestError(431, too_large)
        line = raw.removesuffix(b"\n").removesuffix(b"\r").decode("latin-1")
        if line:
            lines.append(line)
        elif lines:  # the blank line that ends the head (blank lines before it are ignored)
            return lines


async def _answer(
    writer: asyncio.StreamWriter,
    reader: asyncio.StreamReader,
    response: Response,
    *,
    with_body: bool = True,
) -> None:
    """Send the answer and close; an error answer first lets the client finish sending."""
    try:
        async with asyncio.timeout(WRITE_TIMEOUT):
            writer.write(encode(response, with_body=with_body))
            await writer.drain()
    except (TimeoutError, ConnectionError):
        writer.transport.abort()  # a client that does not take its answer is dropped
        return
    if response.status >= 400 and writer.can_write_eof():
        await _linger(writer, reader)
    await _close(writer)


async def _linger(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    """Say we are done, then discard what the client still sends, for at most LINGER seconds."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        writer.write_eof()
        async with asyncio.timeout(LINGER):
            while await reader.read(HEAD_LIMIT):
                pass


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


# --- the client --------------------------------------------------------------------------------


async def get(url: str, deadline: float, *, accept: str = "*/*", limit: int = MAX_ANSWER) -> bytes:
    """The body of a 200 answer to ``GET url`` (http or https), within ``deadline`` seconds.

    TimeoutError past the deadline (connecting included), OSError when the connection fails,
    ValueError for a URL that is not http(s), or an answer that is not HTTP, not 200,
    cut short, or over ``limit`` bytes. The request is HTTP/1.0, so the answer is never
    chunked and the server closes the connection once it is sent.
    """
    status, phrase, body = _answer_of(await _get_raw(url, deadline, accept, limit), url)
    if status != 200:
        raise ValueError(f"HTTP {status} {phrase} from {url}".rstrip())
    return body


async def get_any(
    url: str, deadline: float, *, accept: str = "*/*", limit: int = MAX_ANSWER
) -> tuple[int, bytes]:
    """The status and body of the answer to ``GET url``, whatever the status (a probe's 503
    says why in its body); otherwise as :func:`get`."""
    status, _, body = _answer_of(await _get_raw(url, deadline, accept, limit), url)
    return status, body


async def _get_raw(url: str, deadline: float, accept: str, limit: int) -> bytes:
    """The whole answer to ``GET url``, head included."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]  # the Host field never carries credentials
    request = f"GET {target} HTTP/1.0\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n"
    async with asyncio.timeout(deadline):
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port or (443 if tls else 80), ssl=tls or None
        )
        try:
            writer.write(request.encode("ascii"))
            await writer.drain()
            raw = await _read_all(reader, limit, url)
        except BaseException:
            writer.transport.abort()  # at once: a failed exchange owes the server nothing
            raise
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return raw


async def _read_all(reader: asyncio.StreamReader, limit: int, url: str) -> bytes:
    """Everything up to the server's close; ValueError past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the answer from {url} is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _answer_of(raw: bytes, url: str) -> tuple[int, str, bytes]:
    """The status and body of a whole HTTP answer; ValueError when it is not one."""
    head, blank, body = raw.partition(b"\r\n\r\n")
    status_line, *field_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, phrase = rest.partition(" ")
    if not blank or not version.startswith("HTTP/") or not code.isdigit():
        raise ValueError(f"not an HTTP answer from {url}")
    fields = {}
    for line in field_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "identity").lower() != "identity":
        raise ValueError(f"{url} answered with a transfer coding; only plain bodies are read")
    length = fields.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ValueError(f"{url} answered with a bad Content-Length: {length!r}")
        if len(body) < int(length):
            raise ValueError(
                f"the answer from {url} was cut short at {len(body)} of {length} bytes"
            )
        body = body[: int(length)]
    return int(code), phrase, body
