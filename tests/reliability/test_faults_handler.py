"""Handler faults under load in a group of three: a handler that hangs (the route's timeout
ends it), one that raises (retried, then dead-lettered), one that blocks the event loop
(liveness fails and the log says why), and a dead-letter file on a full or unwritable disk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.reliability.conftest import StartGroup
from tests.reliability.faulty import failing
from tests.reliability.group import books
from tests.reliability.load import Load
from tests.support.fetch import fetch
from tests.support.mosquitto import Mosquitto
from tests.support.processes import WorkerProcess
from tests.support.waiting import until

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def letters(path: Path) -> list[dict[str, object]]:
    """The records of a JSON-lines dead-letter file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def numbers_of(records: list[dict[str, object]]) -> set[int]:
    return {json.loads(str(r["payload"]))["n"] for r in records}


async def test_handler_hangs_until_its_timeout(
    broker: Mosquitto, start_group: StartGroup, tmp_path: Path
) -> None:
    dead = tmp_path / "dead.jsonl"
    every, count = 150, 1500
    workers = await start_group(
        "--dead-letter", f"file:{dead}", FAULT_HANG_EVERY=str(every), FAULT_TIMEOUT="0.3"
    )
    load = Load(broker.host, broker.port, rate=500.0)
    await load.run(range(count))
    book = await books("a handler that hangs (timeout 0.3 s)", workers, load)
    book.check()
    hung = {n for n in range(count) if failing(n, every)}
    records = letters(dead)
    assert numbers_of(records) == hung
    assert {r["reason"] for r in records} == {"timeout"}
    assert book.dead_lettered == len(hung)


async def test_handler_raises_is_retried_then_dead_lettered(
    broker: Mosquitto, start_group: StartGroup, tmp_path: Path
) -> None:
    dead = tmp_path / "dead.jsonl"
    every, count = 50, 3000
    workers = await start_group(
        "--dead-letter", f"file:{dead}", FAULT_RAISE_EVERY=str(every), FAULT_RETRIES="1"
    )
    load = Load(broker.host, broker.port, rate=1000.0)
    await load.run(range(count))
    book = await books("a handler that raises (one retry)", workers, load)
    book.check()
    failed = {n for n in range(count) if failing(n, every)}
    records = letters(dead)
    assert numbers_of(records) == failed
    assert {(r["reason"], r["attempts"]) for r in records} == {("error", 2)}
    assert "RuntimeError: event 0 asked to fail" in "".join(w.log_text() for w in workers)


async def livez_answers(worker: WorkerProcess, within: float) -> bool:
    """True when /livez answers 200 within ``within`` seconds."""
    try:
        status, _, _ = await fetch(worker.port, "/livez", deadline=within)
    except TimeoutError:
        return False
    return status == 200


async def test_blocked_event_loop_fails_liveness_and_says_why(
    broker: Mosquitto, start_group: StartGroup
) -> None:
    workers = await start_group(
        env={"w2": {"FAULT_BLOCK_AFTER": "100", "FAULT_BLOCK_SECONDS": "4"}}
    )
    blocked = workers[1]
    load = Load(broker.host, broker.port, rate=1000.0)
    stream = asyncio.create_task(load.run(range(3000)))
    await until(lambda: "event loop blocked for" in blocked.log_text(), "the watchdog's report")
    # the kubelet's view: no answer within its timeoutSeconds
    assert not await livez_answers(blocked, within=1.0)
    log = blocked.log_text()
    assert "a handler is making a blocking call here" in log
    assert "time.sleep(BLOCK_SECONDS)" in log  # the stack names the blocking line
    await until(lambda: livez_answers(blocked, within=1.0), "/livez to answer again")
    await until(lambda: "event loop turned again" in blocked.log_text(), "the recovery report")
    await stream
    book = await books("a handler that blocks the event loop for 4 s", workers, load)
    book.check()


@pytest.mark.parametrize("disk", ["full", "unwritable"])
async def test_dead_letter_file_on_a_bad_disk_is_counted(
    broker: Mosquitto, start_group: StartGroup, tmp_path: Path, disk: str
) -> None:
    # Root ignores file modes, so: /dev/full fails every write with ENOSPC, and a path under a
    # regular file cannot be created (ENOTDIR) whoever asks.
    (tmp_path / "a-file").write_text("")
    path = "/dev/full" if disk == "full" else str(tmp_path / "a-file" / "dead.jsonl")
    every, count = 50, 3000
    workers = await start_group("--dead-letter", f"file:{path}", FAULT_RAISE_EVERY=str(every))
    load = Load(broker.host, broker.port, rate=1000.0)
    await load.run(range(count))
    book = await books(f"dead-letter file on a {disk} disk", workers, load)
    book.check()
    failed = sum(1 for n in range(count) if failing(n, every))
    assert book.dropped == {"dead_letter_failed": failed}
    assert book.dead_lettered == 0
    logs = "".join(w.log_text() for w in workers)
    assert f"dead-letter sink file:{path} failed" in logs
    assert "the message is lost" in logs
    for w in workers:
        status, body = await w.readyz()
        assert (status, json.loads(body)["status"]) == (200, "ready")
