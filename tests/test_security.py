"""Run-time security: no network (enforced for the whole test session by tests/conftest.py)."""
import socket

import pytest

from .conftest import NetworkBlocked
from tests.engine_helpers import generate


def test_connections_to_non_loopback_addresses_are_refused_before_anything_is_sent():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkBlocked):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: documentation range


def test_name_lookups_are_refused():
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("example.org", 443)


def test_generation_runs_with_the_network_blocked(tmp_path):
    from tcts.pipeline import Pipeline

    from .helpers import AMUSED

    result = generate(Pipeline.from_folder(AMUSED), "a red cat", width=64, height=64, steps=2)
    assert result.images.shape == (1, 64, 64, 3)
