"""Benchmarks of the worker, run by ``make bench`` (``python -m bench``); results in BENCHMARKS.md.

Benchmarks are not tests (see docs/performance.md): every figure is printed as a ratio to a
baseline measured in the same invocation against the same Mosquitto, and nothing asserts a
timing. Modules:

- :mod:`bench.suite`       one invocation: the plan and its sections, in order
- :mod:`bench.broker`      the benchmarks' Mosquitto (the tests' helper, tuned for load)
- :mod:`bench.payloads`    ~120-byte JSON readings on 100 device topics, timestamped
- :mod:`bench.publisher`   the raw-socket publisher (worker.mqtt encoders, pipelined, windowed)
- :mod:`bench.baseline`    the baseline consumer: bare aiomqtt + orjson on uvloop
- :mod:`bench.apps`        the Apps that ``worker run`` serves in the benchmarks
- :mod:`bench.procs`       consumer processes: start, pause, resume, count, stop
- :mod:`bench.throughput`  consumer throughput (fill the broker while paused, drain, time it)
- :mod:`bench.scenarios`   latency, overload RSS, shared-group scaling
- :mod:`bench.routing`     routing cost with 1 and 10,000 routes, in-process
- :mod:`bench.brokers`     the local platform beside Mosquitto (one publisher, a group of three)
- :mod:`bench.storage`     events into PostgreSQL: batch route, per-event route, COPY, no-op
- :mod:`bench.insert_app`  the per-event route (one INSERT per event) the batch route is held to
- :mod:`bench.machine`     the machine, the versions and the load before each section
- :mod:`bench.report`      the results and the targets; :mod:`bench.markdown` BENCHMARKS.md
"""
