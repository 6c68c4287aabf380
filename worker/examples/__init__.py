"""Example applications that ship with the package, to run as they are or to copy.

``worker run worker.examples.fleet`` is the demo's application: sensor readings, a cooling
command back to a device that runs hot, and presence from device status messages.
``worker run worker.examples.storage`` stores every JSON event as a row in PostgreSQL, one
COPY per batch, acknowledged once committed (it needs asyncpg: the ``postgres`` extra).
"""
