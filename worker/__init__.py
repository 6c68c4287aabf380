"""worker: scalable IoT event workers for Watson IoT Platform and standard MQTT brokers."""

from worker.errors import (
    AppLoadError,
    CodecError,
    ConfigError,
    ConnectError,
    IdentityError,
    NotAuthorized,
    PayloadTooLarge,
    ProtocolError,
    QuickstartError,
    RegistrationError,
    TopicError,
    WorkerError,
)

__version__ = "0.1.0"

__all__ = [
    "AppLoadError",
    "CodecError",
    "ConfigError",
    "ConnectError",
    "IdentityError",
    "NotAuthorized",
    "PayloadTooLarge",
    "ProtocolError",
    "QuickstartError",
    "RegistrationError",
    "TopicError",
    "WorkerError",
    "__version__",
]
