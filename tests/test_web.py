"""The shared HTTP limits over real sockets, for the bare server, the worker's and the platform's.

Every server in the project is a ``worker.web.Server``: each limit is proven on all three, and
the client :func:`worker.web.get` against the same server and against misbehaving ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from worker import web
from worker.http import HttpServer
from worker.platform.metrics import MetricsServer

DEADLINE = 10.0
#: a short read deadline, so the slow-client tests take a fraction of a second
SHORT = 0.4

Answer = tuple[int, dict[str, str], bytes]


def a_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("web_test", "a counter every server exposes", registry=registry).inc(7)
    return registry


async def serve_metrics(registry: CollectorRegistry) -> web.Response:
    return web.Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)


@pytest.fixture(params=["web", "worker", "platform"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """The port of one of the project's servers, each serving /metrics."""
    registry = a_registry()
    if request.param == "worker":
        worker = HttpServer("127.0.0.1", 0, registry=registry, readiness=lambda: None)
        await worker.start()
        yield worker.port
        await worker.close()
    elif request.param == "platform":
        platform = MetricsServer(registry)
        await platform.start("127.0.0.1", 0)
        yield platform.port
        await platform.close()
    else:
        bare = web.Server({"/metrics": lambda: serve_metrics(registry)})
        await bare.start("127.0.0.1", 0)
        yield bare.port
        await bare.close()


async def exchange(port: int, *chunks: bytes, eof: bool = False) -> bytes:
    """Send the chunks, then read until the server closes; within DEADLINE."""
    async with asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
            if eof:
                writer.write_eof()
            return await reader.read()
        finally:
            writer.close()


def parse(raw: bytes) -> Answer:
    """(status, header fields with lowercase names, body) of one answer."""
    head, blank, body = raw.partition(b"\r\n\r\n")
    assert blank, f"no complete answer: {raw[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 ")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), fields, body


async def ask(port: int, *chunks: bytes, eof: bool = False) -> Answer:
    return parse(await exchange(port, *chunks, eof=eof))


# --- the server: what every one of them answers ------------------------------------------------


async def test_get_answers_and_closes(port: int) -> None:
    status, fields, body = await ask(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert int(fields["content-length"]) == len(body)
    assert b"web_test_total 7.0" in body
    assert fields["connection"] == "close"  # and exchange() returning proves the close


async def test_head_has_the_get_fields_but_no_body(port: int) -> None:
    _, got, body = await ask(port, b"GET /metrics HTTP/1.1\r\n\r\n")
    status, fields, nothing = await ask(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert (status, nothing) == (200, b"")
    assert int(fields["content-length"]) == len(body) > 0
    assert fields["content-type"] == got["content-type"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "BREW"])
async def test_other_methods_get_405_with_allow(port: int, method: str) -> None:
    status, fields, body = await ask(port, f"{method} /metrics HTTP/1.1\r\n\r\n".encode())
    assert status == 405
    assert fields["allow"] == "GET, HEAD"
    assert f"method {method} is not allowed; use GET and HEAD" in body.decode()


async def test_a_refused_post_body_does_not_cost_the_answer(port: int) -> None:
    """The server lingers on its error answers, so unread bytes do not reset the connection."""
    body = b"x" * 512 * 1024
    head = f"POST /metrics HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    assert (await ask(port, head, body))[0] == 405


async def test_unknown_paths_get_404_naming_what_is_served(port: int) -> None:
    status, _, body = await ask(port, b"GET /nope?x=1 HTTP/1.1\r\n\r\n")
    assert status == 404
    assert "no such path: /nope; this server answers" in body.decode()
    assert "/metrics" in body.decode()


async def test_an_oversized_header_line_gets_431(port: int) -> None:
    line = b"X-Big: " + b"x" * web.HEAD_LIMIT + b"\r\n"
    status, _, body = await ask(port, b"GET /metrics HTTP/1.1\r\n", line, b"\r\n")
    assert status == 431
    assert f"over {web.HEAD_LIMIT} bytes" in body.decode()


async def test_many_small_fields_over_the_limit_get_431(port: int) -> None:
    fields = b"".join(b"X-F%d: %s\r\n" % (n, b"y" * 50) for n in range(web.HEAD_LIMIT // 50))
    assert (await ask(port, b"GET /metrics HTTP/1.1\r\n", fields, b"\r\n"))[0] == 431


async def test_a_huge_head_still_gets_its_431(port: int) -> None:
    huge = b"X-Huge: " + b"z" * (1024 * 1024)
    assert (await ask(port, b"GET /metrics HTTP/1.1\r\n", huge, b"\r\n\r\n"))[0] == 431


async def test_a_head_just_under_the_limit_is_served(port: int) -> None:
    start = b"GET /metrics HTTP/1.1\r\nX-Pad: "
    pad = b"p" * (web.HEAD_LIMIT - len(start) - len(b"\r\n\r\n"))
    assert (await ask(port, start, pad, b"\r\n\r\n"))[0] == 200


async def test_a_silent_client_gets_408_at_the_read_deadline(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "READ_TIMEOUT", SHORT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, body = await ask(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    elapsed = loop.time() - started
    assert status == 408
    assert f"did not arrive within {SHORT:g} s" in body.decode()
    assert SHORT * 0.9 <= elapsed < SHORT + 3.0


async def test_a_trickling_client_gets_408_at_the_same_deadline(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline covers the whole head, however steadily its bytes arrive."""
    monkeypatch.setattr(web, "READ_TIMEOUT", SHORT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")

        async def trickle() -> None:
            while True:  # one header byte every 20 ms, never the blank line
                writer.write(b"X-Slow: s\r\n")
                await asyncio.sleep(0.02)  # the pace of a slow client, not a synchronisation

        dripping = asyncio.create_task(trickle())
        try:
            raw = await reader.read()
        finally:
            dripping.cancel()
            writer.close()
    assert parse(raw)[0] == 408
    assert loop.time() - started < SHORT + 3.0


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"hello\r\n\r\n", "not an HTTP/1.x request line: 'hello'"),
        (b"GET /metrics HTTP/2.0\r\n\r\n", "not an HTTP/1.x request line"),
        (b"GET /metrics\r\n\r\n", "not an HTTP/1.x request line"),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", "not an HTTP/1.x request line"),
        (b"GET metrics HTTP/1.1\r\n\r\n", "not a request target: 'metrics'"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", "not a header field"),
        (b"GET /metrics HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", "not a header field"),
        (b"GET /metrics HTTP/1.1\r\nX-A : 1\r\n\r\n", "not a header field"),
    ],
)
async def test_bad_heads_get_400_saying_what_was_expected(port: int, raw: bytes, says: str) -> None:
    status, _, body = await ask(port, raw)
    assert status == 400
    assert says in body.decode()


async def test_a_client_that_leaves_inside_the_head_gets_400(port: int) -> None:
    status, _, body = await ask(port, b"GET /metr", eof=True)
    assert (status, body) == (400, b"the connection ended inside the request head\n")


async def test_a_port_probe_gets_no_answer_and_the_server_keeps_serving(port: int) -> None:
    assert await exchange(port, eof=True) == b""
    assert (await ask(port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /metrics HTTP/1.0\n\n",  # bare line feeds
        b"\r\nGET /metrics HTTP/1.1\r\n\r\n",  # a blank line before the request line
        b"GET http://127.0.0.1/metrics?x HTTP/1.1\r\n\r\n",  # the absolute form
        b"GET /metrics?name[]=worker HTTP/1.1\r\nX-Empty:\r\n\r\n",
    ],
)
async def test_lenient_but_valid_heads_are_served(port: int, raw: bytes) -> None:
    assert (await ask(port, raw))[0] == 200


# --- the bare server -----------------------------------------------------------------------


@pytest.fixture
async def failing() -> AsyncIterator[web.Server]:
    async def broken() -> web.Response:
        raise RuntimeError("a bug in a route")

    server = web.Server({"/broken": broken})
    await server.start("127.0.0.1", 0)
    yield server
    await server.close()


async def test_a_failing_route_is_a_500_and_a_logged_stack(
    failing: web.Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="worker.web"):
        status, _, body = await ask(failing.port, b"GET /broken HTTP/1.1\r\n\r\n")
    assert (status, body) == (500, b"/broken failed; the server's log says why\n")
    assert "a bug in a route" in caplog.text
    assert (await ask(failing.port, b"GET /broken HTTP/1.1\r\n\r\n"))[0] == 500


def test_the_port_is_unknown_before_start() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = web.Server({}).port


async def test_a_busy_port_is_an_os_error(failing: web.Server) -> None:
    with pytest.raises(OSError, match="in use"):
        await web.Server({}).start("127.0.0.1", failing.port)


# --- the client ----------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def big() -> AsyncIterator[web.Server]:
    """A real server whose /big page spans many reads, and a /small one."""
    page = bytes(range(256)) * 4096  # 1 MiB

    async def big_page() -> web.Response:
        return web.Response(200, page, "application/octet-stream")

    async def small_page() -> web.Response:
        return web.Response(200, b'{"ok": true}', "application/json")

    server = web.Server({"/big": big_page, "/small": small_page})
    await server.start("127.0.0.1", 0)
    yield server
    await server.close()


async def test_get_reads_a_whole_large_body(big: web.Server) -> None:
    body = await web.get(f"http://127.0.0.1:{big.port}/big", DEADLINE)
    assert body == bytes(range(256)) * 4096


async def test_get_refuses_an_answer_over_its_limit(big: web.Server) -> None:
    with pytest.raises(ValueError, match="is over 1000 bytes"):
        await web.get(f"http://127.0.0.1:{big.port}/big", DEADLINE, limit=1000)


async def test_get_turns_a_non_200_into_a_value_error(big: web.Server) -> None:
    url = f"http://127.0.0.1:{big.port}/missing?x=1"
    with pytest.raises(
        ValueError, match=r"^HTTP 404 Not Found from http://127\.0\.0\.1:\d+/missing"
    ):
        await web.get(url, DEADLINE)


async def test_get_sends_the_query_and_a_host_without_credentials() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    async with raw_server(record) as port:
        body = await web.get(f"http://u:secret@127.0.0.1:{port}/q?a=1&b=2", DEADLINE, accept="x/y")
    assert body == b"ok"
    assert seen == [
        f"GET /q?a=1&b=2 HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: x/y\r\n\r\n".encode()
    ]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"SSH-2.0-OpenSSH\r\n", "not an HTTP answer"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nshort", "cut short at 5 of 10 bytes"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: ten\r\n\r\nbody", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "coding"),
        (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", "HTTP 503 Service Unavailable from"),
    ],
)
async def test_get_refuses_a_bad_answer_clearly(answer: bytes, says: str) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        writer.close()

    async with raw_server(reply) as port:
        with pytest.raises(ValueError, match=says):
            await web.get(f"http://127.0.0.1:{port}/", DEADLINE)


async def test_get_gives_up_at_its_deadline() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    loop = asyncio.get_running_loop()
    async with raw_server(never_answer) as port:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await web.get(f"http://127.0.0.1:{port}/", SHORT)
    assert loop.time() - started < SHORT + 3.0


@pytest.mark.parametrize("url", ["ftp://host/x", "127.0.0.1:9100/metrics", "http:///metrics"])
async def test_get_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        await web.get(url, DEADLINE)


async def test_get_reports_a_refused_connection_as_an_os_error(big: web.Server) -> None:
    port = big.port
    await big.close()
    with pytest.raises(ConnectionRefusedError):
        await web.get(f"http://127.0.0.1:{port}/small", DEADLINE)


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    """A hand-written server on a free port, for answers no real server gives; yields its port.

    On the way out it waits for its connections, so none outlives the test's loop.
    """
    exchanges: list[asyncio.Task[object]] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        exchanges.append(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*exchanges)
