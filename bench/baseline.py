"""The baseline consumer: a bare aiomqtt receive loop with orjson decoding, on uvloop.

This is what a user writes without the worker, and what the worker's figures are divided by.
Run as its own process (like ``worker run``)::

    python -m bench.baseline --host 127.0.0.1 --port 1883 --qos 1 --every 200000

It prints ``ready`` once subscribed, then ``done COUNT MONOTONIC`` each time the count of
decoded messages reaches a multiple of ``--every``: the harness times a drain with the
monotonic clock, which Linux shares between processes. The subscription is a ``$share`` one,
as the worker's ``mqtt`` profile makes, so that the broker does the same work for both.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Coroutine
from typing import Any

import aiomqtt
import orjson

from bench.payloads import FILTER
from worker.loops import loop_factory


async def consume(host: str, port: int, qos: int, every: int, client_id: str) -> None:
    """Receive, decode and count until the process is terminated."""
    async with aiomqtt.Client(host, port, identifier=client_id, keepalive=600) as client:
        await client.subscribe(f"$share/baseline/{FILTER}", qos=qos)
        print("ready", flush=True)
        count = 0
        loads = orjson.loads
        async for message in client.messages:
            loads(message.payload)
            count += 1
            if count % every == 0:
                print(f"done {count} {time.monotonic():.6f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and consume on the chosen loop (uvloop by default)."""
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--every", type=int, required=True, help="report every N messages")
    parser.add_argument("--client-id", default="bench-baseline")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    coro: Coroutine[Any, Any, None] = consume(
        args.host, args.port, args.qos, args.every, args.client_id
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            runner.run(coro)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
