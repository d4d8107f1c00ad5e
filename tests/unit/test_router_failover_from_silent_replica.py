"""A router whose replica goes silent (node frozen) over real channel connections: requests on it fail
within the heartbeat timeout, idempotent ones are sent again to another replica, the replica is
reported unreachable and gets no more requests; a replica already removed from routing still fails
its in-flight requests when it goes silent, and its connection is closed once they are done."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

import pytest

from channel_peer import KEY
from serve_nb.data.channel import Address, ChannelClient, ChannelServer, ConnectionLost
from serve_nb.data.request import Request, RequestKind
from serve_nb.data.router import Router
from serve_nb.types import DeploymentID, ReplicaInfo, ReplicaSet
from test_channel_round_trip import FakeReplica
from test_channel_silent_replica import BOUND_S, HEARTBEAT_S, freeze

DEP = DeploymentID("app", "Model")
WAIT_S = 10.0


class Fleet:
    """Replicas r1 and r2 on real sockets, the router's connections to them, and what was reported."""

    def __init__(self) -> None:
        self.replicas = {rid: FakeReplica() for rid in ("r1", "r2")}
        self.servers = {rid: ChannelServer(replica, KEY) for rid, replica in self.replicas.items()}
        self.infos: dict[str, ReplicaInfo] = {}
        self.clients: dict[str, list[ChannelClient]] = {"r1": [], "r2": []}
        self.unreachable: list[str] = []

    async def start(self) -> None:
        for rid, server in self.servers.items():
            address = await server.start("127.0.0.1", use_uds=False)
            self.infos[rid] = ReplicaInfo(rid, address.host, address.port, None, "node", 1)

    def connect(self, info: ReplicaInfo) -> ChannelClient:
        client = ChannelClient(Address(info.host, info.port), KEY, heartbeat_timeout_s=HEARTBEAT_S)
        self.clients[info.replica_id].append(client)
        return client

    def replica_set(self, *rids: str) -> ReplicaSet:
        return ReplicaSet(tuple(self.infos[rid] for rid in rids), max_ongoing_requests=4)


def with_fleet(test: Callable[[Fleet, Router], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        fleet = Fleet()
        await fleet.start()
        router = Router(DEP, fleet.connect, rng=random.Random(0), on_replica_unreachable=fleet.unreachable.append)
        router.update(fleet.replica_set("r1", "r2"))
        try:
            return await asyncio.wait_for(test(fleet, router), WAIT_S)
        finally:
            router.close()
            for server in fleet.servers.values():
                server.abort()

    return asyncio.run(main())


def block() -> Request:
    return Request(RequestKind.CALL, "block", (), {})


async def until_running(replica: FakeReplica, count: int) -> None:
    while len(replica.requests) < count:
        await asyncio.sleep(0.01)


def test_a_silent_replica_fails_its_requests_retries_idempotent_ones_and_is_reported():
    async def test(fleet: Fleet, router: Router) -> None:
        r1, r2 = fleet.replicas["r1"], fleet.replicas["r2"]
        # Four calls: the router spreads them, two on each replica (power of two over in-flight counts).
        plain = [asyncio.ensure_future(router.call(block())) for _ in range(2)]
        retried = [asyncio.ensure_future(router.call(block(), retries=1)) for _ in range(2)]
        await until_running(r1, 2)
        await until_running(r2, 2)
        freeze(fleet.servers["r1"])
        loop = asyncio.get_running_loop()
        frozen_at = loop.time()
        await asyncio.wait(plain + retried, timeout=BOUND_S, return_when=asyncio.FIRST_EXCEPTION)
        assert loop.time() - frozen_at <= BOUND_S
        assert fleet.unreachable == ["r1"]
        r2.gate.set()
        results = await asyncio.gather(*plain, *retried, return_exceptions=True)
        lost = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, ConnectionLost) and "stopped answering" in str(r) for r in lost)
        assert results[2:] == ["unblocked", "unblocked"]  # the idempotent ones: sent again, to r2
        assert len(r2.requests) == 2 + (2 - len(lost))  # r1 held two calls: each failed or was retried
        assert await router.call(Request(RequestKind.CALL, "echo", (7,), {})) == ((7,), {})
        assert len(fleet.replicas["r1"].requests) == 2  # nothing more went to the silent replica

    with_fleet(test)


def test_a_replica_removed_from_routing_still_fails_its_requests_when_it_goes_silent():
    async def test(fleet: Fleet, router: Router) -> None:
        router.update(fleet.replica_set("r1"))
        pending = asyncio.ensure_future(router.call(block()))
        await until_running(fleet.replicas["r1"], 1)
        router.update(fleet.replica_set("r2"))  # r1 leaves the set with a request in flight
        freeze(fleet.servers["r1"])
        with pytest.raises(ConnectionLost, match="stopped answering"):
            await asyncio.wait_for(pending, BOUND_S)
        (client,) = fleet.clients["r1"]
        assert client.closed  # and its connection is not kept

    with_fleet(test)


def test_a_removed_replicas_connection_is_closed_once_its_requests_end():
    async def test(fleet: Fleet, router: Router) -> None:
        router.update(fleet.replica_set("r1"))
        pending = asyncio.ensure_future(router.call(block()))
        await until_running(fleet.replicas["r1"], 1)
        router.update(fleet.replica_set("r2"))
        (client,) = fleet.clients["r1"]
        assert not client.closed  # the request finishes on it
        fleet.replicas["r1"].gate.set()
        assert await pending == "unblocked"
        assert client.closed

    with_fleet(test)
