"""deploy/mosquitto/mosquitto.conf: Mosquitto starts with it, a worker login gets in, and the
limits the docs quote are the ones it (and the EMQX of the mqtt overlay) sets."""

from __future__ import annotations

import getpass
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.manifests import DEPLOY, ROOT, one, render
from tests.support.mosquitto import mosquitto_binary, password_line
from tests.support.ports import free_port
from tests.support.waiting import NETWORK, PROCESS, until
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions

pytestmark = pytest.mark.mosquitto

SAMPLE = DEPLOY / "mosquitto" / "mosquitto.conf"
#: the lines a test run replaces: where to listen and where the files are
_LOCAL = ("listener", "password_file")


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def settings_of(text: str) -> dict[str, str]:
    """``key value`` lines of a Mosquitto configuration (comments and blanks skipped)."""
    pairs = (line.split(None, 1) for line in text.splitlines() if line and line[0] != "#")
    return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """Mosquitto on the sample configuration, on a free loopback port; its port."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (make test installs it: scripts/system-deps.sh)")
    passwords = tmp_path / "passwords"
    passwords.write_text(password_line("worker", "secret") + "\n")
    passwords.chmod(0o600)
    port = free_port()
    kept = [line for line in SAMPLE.read_text().splitlines() if not line.startswith(_LOCAL)]
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        "\n".join([
            *kept, f"listener {port} 127.0.0.1", f"password_file {passwords}",
            f"user {getpass.getuser()}", f"log_dest file {tmp_path / 'mosquitto.log'}",
        ]) + "\n"
    )  # fmt: skip
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=PROCESS)


async def test_mosquitto_starts_with_the_sample_and_admits_the_worker(broker: int) -> None:
    options = ConnectOptions(
        host="127.0.0.1", port=broker, client_id="worker-r1", username="worker",
        password="secret", connect_timeout=NETWORK,
    )  # fmt: skip
    await until(lambda: listening(broker), "Mosquitto listening", within=PROCESS)
    transport = AiomqttTransport()
    await transport.connect(options)
    try:
        granted = await transport.subscribe(
            [("$share/myorg1:fleet/iot-2/type/+/id/+/evt/+/fmt/+", 1)]
        )
        assert granted == [1]
    finally:
        await transport.disconnect()


def test_the_sample_sets_the_limits_the_docs_quote() -> None:
    sample = settings_of(SAMPLE.read_text())
    assert int(sample["max_inflight_messages"]) >= 16  # at least the default --concurrency
    assert int(sample["max_queued_messages"]) >= 100_000
    assert sample["allow_anonymous"] == "false"
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    for key in ("max_inflight_messages", "max_queued_messages"):
        assert re.search(rf"`{key} {sample[key]}`", deployment), f"docs/deployment.md: {key}"
    assert "deploy/mosquitto/mosquitto.conf" in deployment


def test_the_emqx_of_the_mqtt_overlay_sets_the_limits_the_docs_quote() -> None:
    emqx = one(render("overlays/mqtt"), "StatefulSet", "emqx")
    [container] = emqx["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["EMQX_MQTT__MAX_INFLIGHT"]) >= 16
    assert int(env["EMQX_MQTT__MAX_MQUEUE_LEN"]) >= 100_000
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    for key in ("EMQX_MQTT__MAX_INFLIGHT", "EMQX_MQTT__MAX_MQUEUE_LEN"):
        assert f"`{key}={env[key]}`" in deployment, f"docs/deployment.md: {key}"
