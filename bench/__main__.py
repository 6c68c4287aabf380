"""``python -m bench``: run the benchmarks and (for a full run) rewrite BENCHMARKS.md.

    python -m bench                       everything, 200,000 messages, median of 3 runs
    python -m bench --quick               everything, smaller and shorter (prints only)
    python -m bench --only throughput,latency --qos 1
    python -m bench --quick --output /tmp/bench.md
    python -m bench --only storage        events into PostgreSQL (its own section)
    python -m bench --only mqtt5          MQTT 5 against 3.1.1, RSS with no broker window
    python -m bench --only processes      worker run --workers 2 vs 1 (its own section)

A full run of every section writes BENCHMARKS.md at the repository root; a quick or partial
run only prints, unless ``--output`` names a file, so that the recorded figures are always
those of a complete run. The storage section is kept in BENCHMARKS.md between markers of its
own: any run that measured it in full (not ``--quick``) replaces it there, whatever else ran.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
import sys
import tempfile
from pathlib import Path

from bench.broker import BenchMosquitto, mosquitto_binary, mosquitto_version
from bench.machine import describe
from bench.markdown import render, with_foreign_sections
from bench.mqtt5 import record as record_mqtt5
from bench.mqtt5 import section as mqtt5_section
from bench.processes import record as record_processes
from bench.processes import section as processes_section
from bench.procs import ROOT, until_terminated
from bench.report import Results
from bench.storage import record as record_storage
from bench.storage import section as storage_section
from bench.suite import SECTIONS, Plan, Suite
from worker import loops
from worker.config import Settings


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="fewer messages, shorter runs")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections: {', '.join(SECTIONS)}",
    )
    p.add_argument("--qos", choices=("0", "1", "both"), default="both")
    p.add_argument("--messages", type=int, help="messages per run (200,000; quick 20,000)")
    p.add_argument("--runs", type=int, help="timed runs per figure, median taken (3)")
    p.add_argument("--seconds", type=float, help="seconds of latency/overload/group load")
    p.add_argument(
        "--inflight",
        type=int,
        default=100,
        help="Mosquitto's max_inflight_messages per client (100)",
    )
    p.add_argument("--output", type=Path, help="write the report here")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each section and figure, wait up to this long for other work "
        "on the machine to calm down (0: do not wait)",
    )
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    """The sizes of a full or quick run, with the overrides of the command line."""
    quick = args.quick
    messages = args.messages or (20_000 if quick else 200_000)
    return Plan(
        sections=tuple(s for s in SECTIONS if s in args.only.split(",")),
        qos=(0, 1) if args.qos == "both" else (int(args.qos),),
        messages=messages,
        runs=args.runs or 3,
        seconds=args.seconds or (2.0 if quick else 5.0),
        overload_rate=10_000 if quick else 20_000,
        routing_messages=min(messages, 100_000),
        routes=10_000,
        compile_counts=(1, 100, 1000) if quick else (1, 1000, 10_000),
        inflight=args.inflight,
        quiet_wait=args.quiet_wait,
        load_window=0.2 if quick else 1.0,
    )


def main(argv: list[str] | None = None) -> int:
    """Run, print, write; 1 when a section failed."""
    args = parse(sys.argv[1:] if argv is None else argv)
    plan = make_plan(args)
    binary = mosquitto_binary()
    if binary is None:
        print("mosquitto is not installed (make bench installs it: scripts/system-deps.sh)")
        return 1
    full = not args.quick and plan.sections == SECTIONS and len(plan.qos) == 2
    output: Path | None = args.output or (ROOT / "BENCHMARKS.md" if full else None)
    results = Results(
        command=shlex.join(["python", "-m", "bench", *(argv or sys.argv[1:])]),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=describe(mosquitto_version(binary)),
        settings={
            "messages per run": f"{plan.messages:,}",
            "timed runs": str(plan.runs),
            "Mosquitto max_inflight_messages": str(plan.inflight),
            "loop": "uvloop (harness, baseline and workers)",
        },
        default_transport=Settings().transport,
        messages=plan.messages,
    )
    for key, value in results.machine.items():
        print(f"{key}: {value}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        folder = Path(tmp)
        broker = BenchMosquitto(binary, folder, max_inflight=plan.inflight)
        broker.start()
        try:
            suite = Suite(plan, broker, results, folder, lambda line: print(line, flush=True))
            failed = loops.run(until_terminated(suite.run()), "uvloop")
        except asyncio.CancelledError:
            print("terminated: every process the run started has been stopped")
            return 1
        finally:
            broker.stop()
    if output is not None:
        previous = output.read_text() if output.exists() else ""
        output.write_text(with_foreign_sections(render(results), previous))
        print(f"wrote {output}")
    else:
        own = "" if args.quick else "; the sections of their own are written below"
        print(
            "quick or partial run: BENCHMARKS.md's main sections left as they are "
            f"(use --output to write them){own}"
        )
    if suite.storage is not None and (args.output or not args.quick):
        where = args.output or ROOT / "BENCHMARKS.md"
        record_storage(storage_section(suite.storage, results.command), where)
        print(f"wrote the storage section of {where}")
    if suite.mqtt5 is not None and (args.output or not args.quick):
        where = args.output or ROOT / "BENCHMARKS.md"
        record_mqtt5(mqtt5_section(suite.mqtt5, results.command), where)
        print(f"wrote the mqtt5 section of {where}")
    if suite.processes is not None and (args.output or not args.quick):
        where = args.output or ROOT / "BENCHMARKS.md"
        record_processes(processes_section(suite.processes, results.command), where)
        print(f"wrote the processes section of {where}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
