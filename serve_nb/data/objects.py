"""Large calls through Ray's object store: the one place the data plane calls a replica as a Ray actor.

A handle call whose arguments or reply are large (``serialization.LARGE_PAYLOAD_BYTES``) is not copied
through the channel's socket. Ray puts it in shared memory once and the other side maps it: numpy arrays
arrive without a copy (read-only, as in Ray Serve), and Ray moves them between nodes itself. The router
still chooses the replica and counts its slot, and the replica still admits or rejects the call, so limits
and autoscaling see these calls like any other. Ray's reference counting frees the objects: the caller
owns the arguments until the call ends; a reply belongs to the task that returned it until the caller
drops it.
"""

from __future__ import annotations

import asyncio
import functools
from enum import IntEnum
from typing import Any, Protocol

from serve_nb.common.names import NAMESPACE, replica_actor_name
from serve_nb.common.serialization import unpack_exception
from serve_nb.data.channel import ConnectionLost, Rejected
from serve_nb.data.request import Request
from serve_nb.types import DeploymentID


class Outcome(IntEnum):
    """How the replica answered a call sent through the object store."""

    OK = 0  # the value follows
    ERROR = 1  # a packed exception follows (the user's, with the replica's traceback)
    REJECTED = 2  # full or draining: it did not run, send it elsewhere


class LargeCalls(Protocol):
    """What the router needs to send a large call, or fetch a large reply, another way than the channel."""

    async def call(self, dep: DeploymentID, replica_id: str, request: Request) -> Any: ...

    async def take(self, dep: DeploymentID, replica_id: str, token: str) -> Any: ...

    def forget(self, dep: DeploymentID, replica_id: str) -> None: ...


class ObjectStoreCalls:
    """Large calls as Ray actor calls; one per process, shared by its routers."""

    def __init__(self) -> None:
        self._actors: dict[tuple[DeploymentID, str], Any] = {}

    async def call(self, dep: DeploymentID, replica_id: str, request: Request) -> Any:
        """Run ``request`` on the replica; raises Rejected, ConnectionLost, or the user's error."""
        actor = await self._actor(dep, replica_id)
        # Submitting copies the arguments into the object store: off the event loop, which serves other calls.
        submit = functools.partial(actor.call_with_objects.remote, request.to_wire())
        ref = await asyncio.get_running_loop().run_in_executor(None, submit)
        outcome, value = await self._result(ref, replica_id)
        if outcome == Outcome.OK:
            return value
        if outcome == Outcome.REJECTED:
            raise Rejected()
        raise unpack_exception(value)

    async def take(self, dep: DeploymentID, replica_id: str, token: str) -> Any:
        """The large reply the replica kept under ``token`` (see ``StashedResult``)."""
        actor = await self._actor(dep, replica_id)
        return await self._result(actor.take_stashed.remote(token), replica_id)

    def forget(self, dep: DeploymentID, replica_id: str) -> None:
        """The replica left the deployment: drop its actor handle."""
        self._actors.pop((dep, replica_id), None)

    async def _actor(self, dep: DeploymentID, replica_id: str) -> Any:
        actor = self._actors.get((dep, replica_id))
        if actor is None:
            import ray

            lookup = functools.partial(ray.get_actor, replica_actor_name(dep, replica_id), namespace=NAMESPACE)
            try:
                actor = await asyncio.get_running_loop().run_in_executor(None, lookup)
            except ValueError as exc:  # no such actor: it stopped since the router chose it
                raise ConnectionLost(f"Replica {replica_id} of {dep} is gone.") from exc
            self._actors[(dep, replica_id)] = actor
        return actor

    @staticmethod
    async def _result(ref: Any, replica_id: str) -> Any:
        import ray

        try:
            return await ref
        except asyncio.CancelledError:
            ray.cancel(ref)  # the replica cancels the user's work, as a channel CANCEL would
            raise
        except ray.exceptions.RayActorError as exc:
            raise ConnectionLost(
                f"Replica {replica_id} died while it was handling a call sent through the object store."
            ) from exc
