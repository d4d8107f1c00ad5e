"""Exceptions users of serve_nb can catch (names match Ray Serve's)."""

from __future__ import annotations


class ServeException(Exception):
    """Base class of every error serve_nb raises on its own behalf."""


#: Ray Serve's name for the same base class, so ``except RayServeException`` ports as is.
RayServeException = ServeException


class BackPressureError(ServeException):
    """A caller's queue for a deployment is full (``max_queued_requests``); retry later."""

    def __init__(self, deployment: str, num_queued: int, max_queued: int) -> None:
        self.deployment = deployment
        self.num_queued = num_queued
        self.max_queued = max_queued
        super().__init__(
            f"Request dropped due to backpressure: {num_queued} requests are already queued "
            f"for deployment '{deployment}' (max_queued_requests={max_queued}). "
            "Retry later, add replicas, or raise max_queued_requests."
        )

    def __reduce__(self):  # keep the structured fields across processes
        return (type(self), (self.deployment, self.num_queued, self.max_queued))


class DeploymentUnavailableError(ServeException):
    """The deployment cannot take requests: it failed to deploy, was deleted, or Serve is down."""


class RequestCancelledError(ServeException):
    """The request was cancelled before it finished."""


class ReplicaUnavailableError(ServeException):
    """The replica serving a request died or became unreachable while handling it."""


class ControllerUnreachableError(ServeException):
    """serve_nb's controller did not answer within ``waited_s`` (its node is lost or frozen, and Ray is
    restarting it, or the head node is gone). Raised by ``serve.status()`` within seconds instead of
    blocking until Ray gives up; call again later. A notebook view shows it as "controller unreachable,
    retrying" (``ControllerUnreachableError.STATE``) and keeps its last known state."""

    STATE = "controller unreachable, retrying"

    def __init__(self, what: str, waited_s: float) -> None:
        self.what = what
        self.waited_s = waited_s
        super().__init__(
            f"{what}: serve_nb's controller did not answer within {waited_s:g} s ({self.STATE}). Its node may be "
            "lost or frozen while Ray restarts it; if the head node itself is gone, so is the Ray cluster. "
            "Try again in a few seconds; ray.nodes() shows which nodes are alive."
        )

    def __reduce__(self):  # keep the structured fields across processes
        return (type(self), (self.what, self.waited_s))


class DeployError(ServeException, RuntimeError):
    """``serve.run`` could not bring an application up; the message carries the user's traceback.

    Also a RuntimeError: Ray Serve raises RuntimeError for a failed deploy, and code written for it
    catches that."""


class DeployConflictError(ServeException, ValueError):
    """``serve.run`` was refused before anything changed: the route prefix belongs to another application,
    or Serve is shutting down. A RayServeException, as in Ray Serve, and a ValueError, as before."""


class PortInUseError(ServeException):
    """The HTTP proxy cannot listen on its port because another program holds it.

    Its own type (with ``host`` and ``port``) so a caller can name the port and suggest another, as the
    ``%serve_connect`` magic does in one line, instead of showing a traceback."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(port_in_use_message(host, port))

    def __reduce__(self):  # keep the structured fields across processes
        return (type(self), (self.host, self.port))


def port_in_use_message(host: str, port: int) -> str:
    """What a proxy reports when ``host:port`` is taken; one wording, so ``serve.start`` can recognise it."""
    return (f"Port {port} on {host} is already in use, so the serve_nb HTTP proxy cannot listen there. "
            f"Stop the program using it, or start Serve on another port: "
            f"serve.start(http_options={{'port': {port + 1}}}).")


class RemoteTraceback(Exception):
    """Carries the replica-side traceback text as the ``__cause__`` of a re-raised user error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


__all__ = [
    "ServeException",
    "RayServeException",
    "DeployConflictError",
    "BackPressureError",
    "DeploymentUnavailableError",
    "RequestCancelledError",
    "ReplicaUnavailableError",
    "DeployError",
    "RemoteTraceback",
]
