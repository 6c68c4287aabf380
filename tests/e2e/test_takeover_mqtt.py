"""Two replicas given the same instance name on the mqtt profile share one client ID and take
each other over; the worker says so instead of reconnecting in silence. (Left to their
defaults, two replicas on one machine get distinct names: tests/test_instance_name.py.)"""

from __future__ import annotations

from tests.e2e.conftest import Spawn
from tests.support.mosquitto import Mosquitto
from tests.support.waiting import until


async def test_the_same_instance_on_the_mqtt_profile_is_reported(
    mosquitto: Mosquitto, spawn: Spawn
) -> None:
    args = (
        "--profile", "mqtt", "--org", "myorg1", "--app-id", "fleet", "--instance", "same",
        "--host", mosquitto.host, "--port", str(mosquitto.port),
    )  # fmt: skip
    one, two = spawn("one", *args), spawn("two", *args)
    await one.start()
    assert "client ID fleet-same" in one.ready_line
    await two.start()
    message = "the connection as fleet-same was closed 2 times in a row"

    def reported() -> bool:
        logs = one.log_text() + two.log_text()
        return message in logs and "another process uses the same client ID" in logs

    await until(reported, "the takeover report")
