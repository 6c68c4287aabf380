"""worker: scalable IoT event workers for Watson IoT Platform and standard MQTT brokers."""

from worker.app import App
from worker.batching import BatchFailed
from worker.context import Context
from worker.deadletter import DeadLetter, DeadLetterSink
from worker.errors import (
    AppLoadError,
    CodecError,
    ConfigError,
    ConnectError,
    IdentityError,
    NotAuthorized,
    PayloadTooLarge,
    PermanentError,
    ProtocolError,
    QuickstartError,
    RegistrationError,
    TopicError,
    WorkerError,
)
from worker.messages import (
    AppStatus,
    Command,
    DeviceStatus,
    Event,
    MessageProperties,
    register_codec,
)
from worker.routes import Batch

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppLoadError",
    "AppStatus",
    "Batch",
    "BatchFailed",
    "CodecError",
    "Command",
    "Context",
    "ConfigError",
    "ConnectError",
    "DeadLetter",
    "DeadLetterSink",
    "DeviceStatus",
    "Event",
    "IdentityError",
    "MessageProperties",
    "NotAuthorized",
    "PayloadTooLarge",
    "PermanentError",
    "ProtocolError",
    "QuickstartError",
    "RegistrationError",
    "TopicError",
    "WorkerError",
    "__version__",
    "register_codec",
]
