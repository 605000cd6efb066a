"""The bus (NATS JetStream): the embedded nats-server, the connection, subjects per instance, the price bus.

``bootstrap.py`` wires it: ``open_bus`` in ``bus/wiring.py`` starts or finds the server, connects, registers the
bus in the database and attaches the process's quote store. See ``bridge.PriceBus`` for what a process holds.
"""
