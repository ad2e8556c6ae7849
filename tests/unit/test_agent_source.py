"""Which source address the agent's requests to the servers leave from."""

from __future__ import annotations

from podium.agent.source import source_address


def test_a_loopback_address_is_used_for_servers_on_loopback() -> None:
    servers = ["http://127.0.0.1:4646", "127.0.0.1:4647", "http://localhost:4648"]
    assert source_address("127.0.0.3", servers) == "127.0.0.3"


def test_the_kernel_picks_when_the_address_cannot_reach_a_server() -> None:
    # A loopback source cannot reach another host (nothing is sent: a UDP connect).
    assert source_address("127.0.0.3", ["http://127.0.0.1:4646", "http://192.0.2.1:4646"]) is None


def test_the_kernel_picks_for_addresses_this_host_does_not_have() -> None:
    assert source_address("192.0.2.77", ["http://127.0.0.1:4646"]) is None
    assert source_address("0.0.0.0", ["http://127.0.0.1:4646"]) is None
    assert source_address("node-1.example", ["http://127.0.0.1:4646"]) is None
    assert source_address("127.0.0.3", ["http://127.0.0.1:notaport"]) is None
