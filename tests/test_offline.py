"""The suite runs with outbound connections blocked (see conftest._no_network)."""

from __future__ import annotations

import socket

import pytest


def test_outbound_connections_are_blocked() -> None:
    with pytest.raises(OSError, match="network access blocked"), \
            socket.create_connection(("93.184.216.34", 443), timeout=1):
        pass


def test_loopback_is_allowed() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=1):
        pass
    server.close()
