"""A replica's channel server can add a TCP listener after it started (the cluster grew to a second
machine); callers reach it on either address (real sockets on loopback addresses, no Ray)."""

from __future__ import annotations

from test_channel_round_trip import KEY, FakeReplica, call, scenario

from serve_nb.data.channel import Address, ChannelClient, ChannelServer


def test_a_listener_added_later_serves_callers_and_the_first_keeps_serving():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        assert await client.call(call("echo", "before")) == (("before",), {})
        port = await server.listen_tcp("127.0.0.2")  # stands in for the node's IP
        second = ChannelClient(Address("127.0.0.2", port), KEY)
        try:
            assert await second.call(call("echo", "new address")) == (("new address",), {})
            assert await client.call(call("echo", "old address")) == (("old address",), {}), "kept open"
        finally:
            second.close()

    scenario(test)
