"""``worker asyncapi``: the document validates against the official AsyncAPI 3.0.0 schema, and
says what the App consumes, publishes and where."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from worker import App, Event
from worker.asyncapi import document
from worker.cli import main
from worker.config import load_settings
from worker.errors import RegistrationError

SCHEMA = Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json"
#: the README names the version and checksum of the vendored file
SHA256 = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f"
SETTINGS = {"WORKER_ORG": "abc123"}


def validate(doc: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(doc)


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["asyncapi", *args], env=env or SETTINGS)
    return result.exit_code, result.output


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_the_vendored_schema_is_the_one_the_readme_names() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SHA256
    assert SHA256 in (SCHEMA.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", ["worker.examples.fleet", "worker.examples.storage"])
def test_the_examples_documents_are_valid_asyncapi_3(module: str) -> None:
    code, out = cli(module)
    assert code == 0, out
    validate(json.loads(out))


def test_the_fleet_document_lists_its_routes_its_command_and_its_broker() -> None:
    code, out = cli("worker.examples.fleet")
    assert code == 0, out
    doc = json.loads(out)
    reading = doc["channels"]["on_reading"]
    assert reading["address"] == "iot-2/type/{deviceType}/id/{deviceId}/evt/reading/fmt/json"
    assert set(reading["parameters"]) == {"deviceType", "deviceId"}
    assert doc["operations"]["on_reading"]["action"] == "receive"
    alert = doc["channels"]["command.alert"]
    assert alert["address"] == "iot-2/type/{deviceType}/id/{deviceId}/cmd/alert/fmt/json"
    assert doc["operations"]["command.alert"]["action"] == "send"
    payload = doc["components"]["messages"]["command.alert"]["payload"]
    assert payload["title"] == "Alert"
    assert {"temp", "threshold"} <= set(payload["required"])
    server = doc["servers"]["wiotp"]
    assert server["host"] == "abc123.messaging.internetofthings.ibmcloud.com:8883"
    assert server["protocol"] == "secure-mqtt"
    assert server["bindings"]["mqtt"]["clientId"] == "A:abc123:worker"
    # Every reference resolves inside the document.
    for key, operation in doc["operations"].items():
        assert resolve(doc, operation["channel"]["$ref"]) is doc["channels"][key]
        for message in operation["messages"]:
            assert resolve(doc, resolve(doc, message["$ref"])["$ref"])["name"] == key


def test_the_server_follows_the_settings() -> None:
    env = {"WORKER_PROFILE": "mqtt", "WORKER_ORG": "abc123", "WORKER_HOST": "broker.local",
           "WIOTP_OPTIONS_MQTT_PORT": "1883", "WORKER_TLS": "false"}  # fmt: skip
    code, out = cli("worker.examples.fleet", env=env)
    assert code == 0, out
    doc = json.loads(out)
    assert doc["servers"]["mqtt"]["host"] == "broker.local:1883"
    assert doc["servers"]["mqtt"]["protocol"] == "mqtt"
    assert doc["servers"]["mqtt"]["protocolVersion"] == "5"
    assert "$share/abc123:worker/" in doc["channels"]["on_reading"]["description"]
    validate(doc)


@dataclass
class Position:
    lat: float
    lon: float


@dataclass
class Fix:
    position: Position
    accuracy: float | None = None


def test_a_payload_model_becomes_the_schema_and_nested_definitions_resolve() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Reading(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        temp: float
        where: Position

    app = App()

    @app.event(event="reading", format="json", payload=Reading)
    async def on_reading(event: Event) -> None:
        """Store a reading."""

    @app.event(event="fix", payload=Fix)
    async def on_fix(event: Event) -> None: ...

    app.publishes_event("summary", device_type="gateway", format="txt")
    doc = document(app, load_settings(env=SETTINGS), "tests.test_asyncapi")
    validate(doc)
    schema = doc["components"]["messages"]["on_reading"]["payload"]
    assert schema["properties"]["where"] == {"$ref": "#/components/schemas/Position"}
    assert resolve(doc, schema["properties"]["where"]["$ref"])["properties"]["lat"]
    fix = doc["channels"]["on_fix"]
    assert fix["address"] == "iot-2/type/{deviceType}/id/{deviceId}/evt/fix/fmt/{format}"
    assert "contentType" not in doc["components"]["messages"]["on_fix"]
    summary = doc["channels"]["event.summary"]
    assert summary["address"] == "iot-2/type/gateway/id/{deviceId}/evt/summary/fmt/txt"
    assert doc["components"]["messages"]["event.summary"]["contentType"] == "text/plain"


def test_a_bad_declaration_fails_where_it_is_made() -> None:
    app = App()
    with pytest.raises(RegistrationError, match="publishes_command"):
        app.publishes_command("al/ert")
    with pytest.raises(RegistrationError, match="'\\+' is not one"):
        app.publishes_event("+")


def test_a_module_without_an_app_is_exit_3() -> None:
    code, out = cli("json")
    assert code == 3
    assert "error:" in out


def test_an_unwritable_output_is_exit_2(tmp_path: Path) -> None:
    code, out = cli("worker.examples.fleet", "--output", str(tmp_path / "missing" / "a.json"))
    assert code == 2
    assert "cannot write" in out


def test_the_output_file_holds_the_document(tmp_path: Path) -> None:
    target = tmp_path / "asyncapi.json"
    code, _ = cli("worker.examples.fleet", "-o", str(target))
    assert code == 0
    validate(json.loads(target.read_text(encoding="utf-8")))


def test_the_schema_check_refuses_a_broken_document() -> None:
    code, out = cli("worker.examples.fleet")
    assert code == 0, out
    doc = json.loads(out)
    doc["operations"]["on_reading"]["action"] = "consume"  # 3.0 says receive or send
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
