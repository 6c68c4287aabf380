"""The app of the hostile-input worker tests: every event is decoded, every status counted.

``RECORD_FILE`` names the file where each handled event writes ``{device_id} {fmt} {bytes}``
and each device status ``status {device_id}``, one whole line at a time, so the test can
compare what was handled with what was sent. The file is line-buffered and left open at
shutdown (the process's exit closes it), so the in-memory tests can run the app many times.
"""

from __future__ import annotations

import os

from worker import App, DeviceStatus, Event

app = App()
_record = open(os.environ.get("RECORD_FILE", os.devnull), "a", buffering=1)  # noqa: SIM115


@app.event(timeout=2.0, name="event")
async def on_event(event: Event) -> None:
    # Touching ``data`` decodes by ``fmt``: a payload that does not decode is the outcome
    # ``decode_error``, counted by the pipeline, never an exception out of the worker.
    _ = event.data
    _record.write(f"{event.device_id} {event.format} {len(event.payload)}\n")


@app.device_status(name="status")
async def on_status(status: DeviceStatus) -> None:
    _record.write(f"status {status.device_id}\n")
