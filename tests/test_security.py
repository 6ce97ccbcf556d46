"""Run-time security: no network (enforced for the whole test session by tests/conftest.py)."""
import socket

import pytest
import torch

from .conftest import NetworkBlocked
from tests.engine_helpers import generate


def test_connections_to_non_loopback_addresses_are_refused_before_anything_is_sent():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkBlocked):
            sock.connect(("192.0.2.1", 80))  # TEST-NET-1: documentation range


def test_name_lookups_are_refused():
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("example.org", 443)


def test_generation_with_the_network_blocked_reproduces_the_reference(tmp_path):
    """Loading a model folder and sampling never reach for the network (the block is session-wide)."""
    from tcts.pipeline import Pipeline

    from .helpers import AMUSED, load_case

    result = generate(Pipeline.from_folder(AMUSED), "a photo of a red cat", steps=4, width=96, height=128)
    ref = load_case(AMUSED / "e2e" / "t2i_128x96.safetensors")
    assert torch.equal(result.tokens, ref["final_tokens"])
