"""A group of three ``worker run`` processes sharing one ``$share`` subscription, and the waits
the fault tests need: until the group is back, until it has settled, then the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.reliability.accounting import Ledger, Samples, conservation, family, ledger
from tests.reliability.load import Load
from tests.support.processes import WorkerProcess
from tests.support.waiting import until

APP = "tests.reliability.faulty"
#: QoS 1 messages the broker has in flight per member: the bound of what a dropped member loses
WINDOW = 20


def worker_args(host: str, port: int, instance: str, *more: str) -> tuple[str, ...]:
    """The mqtt profile, one share group ``abc123:faults``, this instance's name, and a Receive
    Maximum of ``WINDOW``: Mosquitto gives an MQTT 5 client the window it announces."""
    return (
        "--profile", "mqtt", "--host", host, "--port", str(port), "--org", "abc123",
        "--app-id", "faults", "--instance", instance, "--drain-timeout", "10",
        "--receive-maximum", str(WINDOW), *more,
    )  # fmt: skip


def alive(workers: Sequence[WorkerProcess]) -> list[WorkerProcess]:
    """The workers whose process is still running."""
    return [w for w in workers if w.proc is not None and w.proc.returncode is None]


async def scrapes(workers: Sequence[WorkerProcess]) -> list[Samples]:
    """The /metrics of every running worker."""
    return list(await asyncio.gather(*(w.metrics() for w in alive(workers))))


async def wait_subscribed(workers: Sequence[WorkerProcess], what: str) -> None:
    """Until every running worker is connected and subscribed."""

    async def subscribed() -> bool:
        for samples in await scrapes(workers):
            if samples["worker_connected"] != 1 or samples["worker_subscribed"] != 1:
                return False
        return True

    await until(subscribed, what)


async def settle(
    workers: Sequence[WorkerProcess],
    load: Load,
    lost_bound: int,
    kept: Sequence[Samples] = (),
) -> None:
    """Until every confirmed message is accounted for (up to ``lost_bound``) and the running
    workers are idle with their own books balanced. ``kept``: scrapes of workers gone."""

    async def settled() -> bool:
        live = await scrapes(workers)
        if any(s["worker_intake_depth"] or s["worker_in_flight"] for s in live):
            return False
        if any(conservation("", s) for s in live):
            return False
        seen = {n for w in workers for n in w.handled()}
        counted = 0
        for samples in [*live, *kept]:
            counted += sum(family(samples, "worker_messages_dropped_total", "reason").values())
            counted += sum(family(samples, "worker_dead_letters_total", "route").values())
            outcomes = family(samples, "worker_messages_handled_total", "outcome")
            counted += outcomes["error"] + outcomes["timeout"] + outcomes["decode_error"]
        return len(load.confirmed - seen) - counted <= lost_bound

    await until(settled, "every confirmed message accounted for")


async def books(
    fault: str,
    workers: Sequence[WorkerProcess],
    load: Load,
    *,
    kept: Sequence[Samples] = (),
    lost_bound: int = 0,
    lost_reason: str = "none expected",
    duplicate_bound: int = 0,
) -> Ledger:
    """Settle, then the ledger of ``fault`` (printed, so ``pytest -rP`` shows every ledger)."""
    await settle(workers, load, lost_bound, kept)
    live = await scrapes(workers)
    book = ledger(
        fault,
        confirmed=load.confirmed,
        unconfirmed=load.unconfirmed,
        handled=[w.handled() for w in workers],
        scrapes=[*live, *kept],
        lost_bound=lost_bound,
        lost_reason=lost_reason,
        duplicate_bound=duplicate_bound,
    )
    for w, samples in zip(alive(workers), live, strict=True):
        book.problems += conservation(w.name, samples)
    print(book.report())
    return book
