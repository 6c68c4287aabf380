"""One client connection: the read loop that glues the codec, the session and the router.

:class:`MqttConnection` is an ``asyncio.Protocol``. Each read is parsed in one call (the
codec returns every complete packet) and handled synchronously; no task is created per
message or per connection. Writes are coalesced: packets queue in a list and one
``transport.write`` per loop iteration sends them all. The transport's ``pause_writing`` marks
the connection paused, so new messages wait in the session's bounded buffers (a slow
subscriber never stalls the publisher or anyone else) and flow again on ``resume_writing``.

It needs only an asyncio transport (``write``, ``close``, ``get_extra_info``, flow-control
callbacks), so TLS and WebSocket listeners reuse it unchanged: a WebSocket layer creates one
and hands it a transport that frames what it writes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, cast

from worker.errors import PacketTooLarge, ProtocolError
from worker.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Disconnect,
    Packet,
    PacketReader,
    ReasonCode,
    Subscribe,
    UnsupportedProtocolVersion,
    encode,
)
from worker.platform.handlers import handle, refuse_version
from worker.platform.limits import Limit
from worker.platform.logs import clip
from worker.platform.router import Envelope
from worker.platform.rules import Principal
from worker.platform.session import Session
from worker.platform.sockets import release
from worker.platform.status import REASONS, CloseCode, ConnectionInfo, Counters

if TYPE_CHECKING:
    from worker.platform.hub import Hub
    from worker.platform.metrics import ClientMetrics

log = logging.getLogger("worker.platform")

FANOUT_BUDGET: Final = 2000
"""Deliveries one connection's read may cause in one loop turn before the rest of it waits
(a filter of a SUBSCRIBE counts as ``handlers.SUBSCRIBE_COST`` of them)."""

SMALL_READ: Final = 4096
"""Bytes of a read that is always parsed at once, whatever the turn's budget."""
PARSE_BYTES: Final = 100
"""Bytes of a read that count as one delivery against the turn's budget (parsing 100 bytes
of SUBSCRIBE filters costs about what a delivery does)."""

#: MQTT 5 reason codes for the server's DISCONNECT, by close code.
_V5_DISCONNECT: Final[dict[int, ReasonCode]] = {
    CloseCode.KEEPALIVE_TIMEOUT: ReasonCode.KEEP_ALIVE_TIMEOUT,
    CloseCode.NOT_AUTHORIZED: ReasonCode.NOT_AUTHORIZED,
    CloseCode.TOPIC_NOT_VALID: ReasonCode.TOPIC_NAME_INVALID,
    CloseCode.MESSAGE_TOO_LARGE: ReasonCode.PACKET_TOO_LARGE,
    CloseCode.CLIENT_ID_REUSED: ReasonCode.SESSION_TAKEN_OVER,
    CloseCode.MAX_QOS: ReasonCode.QOS_NOT_SUPPORTED,
    CloseCode.DATA_NOT_VALID: ReasonCode.MALFORMED_PACKET,
    CloseCode.ADMIN: ReasonCode.ADMINISTRATIVE_ACTION,
    CloseCode.SERVER_SHUTDOWN: ReasonCode.SERVER_SHUTTING_DOWN,
}


class MqttConnection(asyncio.Protocol):
    """The server side of one MQTT connection (any transport: TCP, TLS, WebSocket)."""

    def __init__(self, hub: Hub, *, secure: bool = False, websocket: bool = False) -> None:
        self.hub = hub
        self.secure = secure
        self.websocket = websocket
        # Until CONNECT is accepted only a small packet is read (limits.connect_bytes): an
        # unauthenticated socket must not make the platform buffer a 200 KB packet.
        self.reader = PacketReader(hub.limits.connect_bytes)
        self.protocol_level = MQTT_3_1_1
        self.paused = False
        self.closed = False
        self.close_code: int | None = None
        self.counters = Counters()
        self.session: Session | None = None
        self.principal: Principal | None = None
        self.info: ConnectionInfo | None = None
        self.will: Envelope | None = None
        #: the retained Connect status payload of this connection (W30)
        self.connect_status = b""
        self.metrics: ClientMetrics | None = None
        self.peer = "unknown"
        self.local_port = 0
        # Typed as a whole transport rather than checked with isinstance: uvloop's transports
        # do not register with asyncio's ABCs, so such a check would stop every write there.
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._out_msgs = 0
        self._flush_handle: asyncio.Handle | None = None
        self._drain_wanted = False
        self._timer: asyncio.TimerHandle | None = None
        self._keepalive = 0.0
        self._last_read = self._loop.time()
        #: client topic -> internal topic, for topics this client already published to
        self.routes: dict[str, str] = {}
        #: held by back-pressure (the hub's); packets read and not yet handled wait here
        self.held = False
        self._waiting: list[Packet] | None = None
        #: a large read that came once the loop turn's budget was spent, parsed in a later turn
        self._unparsed: bytes | None = None

    def __repr__(self) -> str:
        who = clip(self.principal.client_id) if self.principal else "(connecting)"
        return f"<MqttConnection {who} from {self.peer}>"

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else str(peer or "unknown")
        sock = transport.get_extra_info("sockname")
        self.local_port = int(sock[1]) if isinstance(sock, tuple) and len(sock) > 1 else 0
        self.transport.set_write_buffer_limits(high=self.hub.write_buffer_high)
        self.hub.opened(self)
        self._timer = self._loop.call_later(self.hub.connect_timeout, self._connect_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._unparsed is not None:
            self._unparsed += data  # arrived while paused: parsed behind what waits
            return
        # A socket whose CONNECT is not accepted yet never parks its read: a thousand sockets
        # each holding a 200 KB partial CONNECT held 130 MB (the partial_connects attack).
        # Parsed at once, such a read costs nothing: its reader refuses a packet longer than
        # limits.connect_bytes at the header.
        connected = self.session is not None
        if connected and self._waiting is None and len(data) > SMALL_READ and self.hub.turn_spent():
            # Parsing is work too (a 35 KB read of filters takes milliseconds): once the turn's
            # budget is spent a large read waits for the next turn; a small one (a CONNECT, a
            # ping, a few messages) never does.
            self._unparsed = data
            self._pause()
            self._loop.call_soon(self._parse_unparsed)
            return
        self.hub.router.fanout += len(data) // PARSE_BYTES
        counters = self.counters
        counters.read_bytes += len(data)
        before = counters.read_msg
        self._last_read = self._loop.time()
        try:
            packets = self.reader.feed(data)
        except PacketTooLarge as exc:
            if self.session is None:
                self.hub.limit(Limit.CONNECT_BYTES)
            self.close(CloseCode.MESSAGE_TOO_LARGE, str(exc))
            return
        except UnsupportedProtocolVersion as exc:
            refuse_version(self, exc)
            return
        except ProtocolError as exc:
            self.close(CloseCode.DATA_NOT_VALID, str(exc))
            return
        if self._waiting is not None:
            self._waiting.extend(packets)  # held: they wait behind the others, in order
        else:
            self._handle_all(packets)
        self.hub.after_read(self, counters.read_msg - before, len(data))

    def _parse_unparsed(self) -> None:
        """Parse a read that waited for a turn with budget left; read again once it is done."""
        data, self._unparsed = self._unparsed, None
        if data is None or self.closed:
            return
        self.data_received(data)
        idle = self._unparsed is None and self._waiting is None and not self.held
        if idle and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def _handle_all(self, packets: list[Packet]) -> None:
        """Handle packets until they are done, a hold stops them, or the work budget of this
        connection (:data:`FANOUT_BUDGET`) or of the whole loop turn (the hub's) is spent;
        what is left waits for the next turn. The first packet of a turn always goes, unless
        it is a SUBSCRIBE: a ping or a single message is never kept waiting behind a flood."""
        router, hub = self.hub.router, self.hub
        budget_ends = router.fanout + FANOUT_BUDGET
        try:
            for index, packet in enumerate(packets):
                if (index or type(packet) is Subscribe) and (
                    router.fanout >= budget_ends or hub.turn_spent()
                ):
                    # Thousands of deliveries or filters in one read would stall every other
                    # client: the rest waits for the next loop turn.
                    self._waiting = packets[index:]
                    self._pause()
                    self._loop.call_soon(self._next_turn)
                    break
                handle(self, packet)
                if self.closed:
                    break
                if self.held:
                    # Back-pressure stops at the packet that caused it, not at the end of the
                    # read: one read can hold thousands of small PUBLISHes.
                    if index + 1 < len(packets):
                        self._waiting = packets[index + 1 :]
                    break
        except Exception:
            # A bug must cost one connection, not the server: log it once and close.
            log.exception("internal error on %r", self)
            self.close(CloseCode.SERVER_CLOSED, "internal error")

    def hold(self) -> None:
        """Back-pressure: stop reading (and handling what was read) until :meth:`release`."""
        self.held = True
        self._pause()

    def release(self) -> None:
        """The hold is over: handle the packets that waited, then read again."""
        self.held = False
        self._next_turn()

    def _pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def _next_turn(self) -> None:
        """Handle the packets that waited; read again once none waits and nothing holds."""
        if self.held:
            return  # the hold's release comes back here
        waiting, self._waiting = self._waiting, None
        if waiting and not self.closed:
            before = self.counters.read_msg
            self._handle_all(waiting)
            self.hub.after_read(self, self.counters.read_msg - before, 0)
        resume = not self.held and self._waiting is None and self._unparsed is None
        resume = resume and not self.closed
        if resume and self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = CloseCode.CLIENT_CLOSED
            self._cancel_timer()
            if self.session is not None:
                self.hub.released(self, CloseCode.CLIENT_CLOSED, None)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out.clear()
        release(self.transport)
        self.hub.forget(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.session is not None and self.session.waiting and not self.closed:
            self.session.drain()

    # --- writing (the session's Outlet) -------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; they leave with everything else queued in this loop iteration."""
        if self.closed:
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def send_message(self, data: bytes) -> None:
        """Queue one PUBLISH."""
        self._out_msgs += 1
        self.send(data)

    def request_drain(self) -> None:
        """Drain the session's buffers again once this iteration's bytes are written."""
        self._drain_wanted = True
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        transport = self.transport
        if out and transport is not None:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.counters.write_bytes += len(data)
            self.counters.write_msg += self._out_msgs
            self.hub.after_write(self, self._out_msgs, len(data))
            self._out_msgs = 0
            transport.write(data)
        if self._drain_wanted and not self.paused and not self.closed:
            self._drain_wanted = False
            if self.session is not None:
                self.session.drain()

    # --- closing ------------------------------------------------------------------------------

    def close(self, code: int, reason: str | None = None) -> None:
        """End the connection with a close code (W40); the first call wins."""
        if self.closed:
            return
        if code not in (CloseCode.NORMAL, CloseCode.SERVER_SHUTDOWN, CloseCode.CLIENT_ID_REUSED):
            text = REASONS.get(code, str(code))
            self.hub.closing_log.info(
                str(code), "closing %r: %s (%s)", self, text, clip(reason or "-")
            )
        v5_code = _V5_DISCONNECT.get(code)
        if self.protocol_level == MQTT_5 and self.session is not None and v5_code is not None:
            self.send(encode(Disconnect(v5_code), MQTT_5))
        self._flush()
        self.closed = True
        self.close_code = code
        self._cancel_timer()
        if self.session is not None:
            self.hub.released(self, code, reason)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket without a goodbye (shutdown of a connection that will not close)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _connect_timeout(self) -> None:
        self._timer = None
        if self.session is None:
            self.close(CloseCode.NO_DATA, "no CONNECT in time")

    def start_keepalive(self, keepalive: int) -> None:
        """CONNECT accepted: replace the CONNECT deadline with the keepalive's (0: none)."""
        self._cancel_timer()
        if keepalive:
            self._keepalive = keepalive * 1.5
            deadline = self._last_read + self._keepalive
            self._timer = self._loop.call_at(deadline, self._check_keepalive)

    def _check_keepalive(self) -> None:
        """Close at 1.5 times the keepalive without a packet (W23, M311 3.1.2.10)."""
        deadline = self._last_read + self._keepalive
        if self._loop.time() >= deadline:
            self._timer = None
            self.close(CloseCode.KEEPALIVE_TIMEOUT, f"nothing received for {self._keepalive:g} s")
        else:
            self._timer = self._loop.call_at(deadline, self._check_keepalive)
