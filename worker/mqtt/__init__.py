"""The MQTT wire protocol, sans-IO: packets to bytes and bytes to packets.

Serves both ends of a connection (the platform emulator and the native client transport) for
MQTT 3.1, 3.1.1 and 5.0. Nothing here touches a socket or an event loop::

    reader = PacketReader(max_packet_size=1 << 20)
    for packet in reader.feed(data):
        ...
    transport.write(encode(Connack(), reader.protocol_level))
"""

from worker.mqtt.codes import (
    MAX_REMAINING_LENGTH,
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    ConnackReturnCode,
    PacketType,
    ReasonCode,
    SubackReturnCode,
    connack_meaning,
    connack_return_code,
)
from worker.mqtt.decode import UnsupportedProtocolVersion
from worker.mqtt.encode import encode, encode_puback, encode_pubacks, encode_publish
from worker.mqtt.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from worker.mqtt.properties import NO_PROPERTIES, Properties, PropertyId
from worker.mqtt.reader import PacketReader, decode_packet

__all__ = [
    "MAX_REMAINING_LENGTH",
    "MQTT_3_1",
    "MQTT_3_1_1",
    "MQTT_5",
    "NO_PROPERTIES",
    "Auth",
    "Connack",
    "ConnackReturnCode",
    "Connect",
    "Disconnect",
    "Packet",
    "PacketReader",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Properties",
    "PropertyId",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "ReasonCode",
    "Suback",
    "SubackReturnCode",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "UnsupportedProtocolVersion",
    "Will",
    "connack_meaning",
    "connack_return_code",
    "decode_packet",
    "encode",
    "encode_puback",
    "encode_pubacks",
    "encode_publish",
]
