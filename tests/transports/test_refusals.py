"""Both transports read a refusing CONNACK the same way, through the codec's one table.

A server answers the CONNECT with each 3.1.1 return code; the credentials and client ID
refusals are NotAuthorized (retrying cannot fix them), the others a plain ConnectError.
paho hands the aiomqtt transport the 5.0 reason code of the return code, so this also checks
that the codec maps it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from worker.errors import ConnectError, NotAuthorized
from worker.mqtt import ConnackReturnCode, connack_meaning
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Transport
from worker.transports.native import NativeTransport

TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "native": NativeTransport,
    "aiomqtt": AiomqttTransport,
}
PERMANENT = (
    ConnackReturnCode.IDENTIFIER_REJECTED,
    ConnackReturnCode.BAD_USERNAME_OR_PASSWORD,
    ConnackReturnCode.NOT_AUTHORIZED,
)


@contextlib.asynccontextmanager
async def refusing(code: int) -> AsyncIterator[int]:
    """A server that reads one CONNECT and answers a CONNACK with ``code``; yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            header = await reader.readexactly(2)
            await reader.readexactly(header[1])
            writer.write(bytes((0x20, 2, 0, code)))
            await writer.drain()
            await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _refusal(transport: str, code: int) -> ConnectError:
    async with refusing(code) as port:
        options = ConnectOptions("127.0.0.1", port, "c", "u", "pw", connect_timeout=5.0)
        with pytest.raises(ConnectError) as caught:
            await TRANSPORTS[transport]().connect(options)
    assert "pw" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("code", PERMANENT, ids=lambda c: c.name)
async def test_a_permanent_refusal_is_not_authorized(transport: str, code: int) -> None:
    error = await _refusal(transport, code)
    assert isinstance(error, NotAuthorized)
    assert error.return_code == code
    assert str(error).endswith(f": {connack_meaning(code)} (CONNACK return code {code})")
    assert "refused client ID 'c' as user 'u'" in str(error)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_unavailable_is_worth_a_retry(transport: str) -> None:
    # (Not "unacceptable protocol version": paho answers that by trying MQTT 3.1 instead.)
    error = await _refusal(transport, ConnackReturnCode.SERVER_UNAVAILABLE)
    assert type(error) is ConnectError
    assert "refused the connection" in str(error)
