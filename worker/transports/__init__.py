"""MQTT client transports behind one small interface (see ``worker.transports.base``)."""
