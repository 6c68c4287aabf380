"""One attack of :mod:`bench.attacks` in a process of its own, for ``python -m bench.attack``.

::

    python -m bench.attacker NAME SIZE PORT TLS_PORT SECONDS

The attack runs for SECONDS, repeated if it lets its sockets go, held if it keeps them; then
the number of rounds it completed is printed, and its sockets close when its standard input
does (so that the caller can take its measurements of the attack before the attackers
leave). In a process of its own
because an attack is thousands of sockets' worth of work: in the process of the probe that
times the platform's CONNACKs and round trips, the attacker's own loop stalls were counted as
the platform's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from bench.attacks import ATTACKS, Held, Target


async def attack_for(name: str, size: int, target: Target, seconds: float, held: Held) -> int:
    """Run attack ``name`` for ``seconds``; the rounds completed. What it keeps open is in
    ``held``."""
    attack, _, holds = ATTACKS[name]
    rounds = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def repeat() -> None:
        nonlocal rounds
        # The deadline is checked as well as the timeout's cancellation: on Python 3.11 a
        # wait_for inside an attack can swallow the cancellation (it was seen on a loaded
        # machine), and the attack then went on for minutes.
        while loop.time() < deadline:
            await attack(target, size, held)
            rounds += 1
            if holds:
                await asyncio.Event().wait()  # what it opened stays open until the time is up

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(repeat(), seconds)
    return rounds


async def attack_then_leave(name: str, size: int, target: Target, seconds: float) -> None:
    """The attack, its rounds printed; the sockets close once standard input does."""
    held = Held()
    print(await attack_for(name, size, target, seconds, held), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    for writer in held:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacker", description=__doc__)
    parser.add_argument("name", choices=list(ATTACKS))
    parser.add_argument("size", type=int)
    parser.add_argument("port", type=int)
    parser.add_argument("tls_port", type=int)
    parser.add_argument("seconds", type=float)
    args = parser.parse_args(argv)
    target = Target(args.port, args.tls_port)
    asyncio.run(attack_then_leave(args.name, args.size, target, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
