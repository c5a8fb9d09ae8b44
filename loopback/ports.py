"""Loopback ports to hand to a server or a launcher before it binds them."""

import random
import socket


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int] | None = None, offset: int = 0) -> int:
    """A loopback port p (with p + offset) free now, drawn below the ephemeral range (32768-60999): there
    the outgoing connections of other processes (the S3 server's, gloo's), which take ephemeral ports,
    cannot grab it before whoever asked binds it."""
    taken = set() if taken is None else taken
    for _ in range(1000):
        port = random.randint(20000, 29999)
        if port not in taken and _port_is_free(port) and _port_is_free(port + offset):
            taken.add(port)
            return port
    raise RuntimeError("no free loopback port found in 20000-29999")
