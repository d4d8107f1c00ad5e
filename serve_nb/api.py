"""The public facade: ``serve.run``, ``serve.delete``, ``serve.status`` ... Thin: validate, build, call.

Everything here works from a notebook cell (whose event loop is running): waits happen on
threads, never with ``asyncio.run``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
import warnings
from typing import Any, Callable

from serve_nb.config import HTTPOptions, ProxyLocation
from serve_nb.core.keywords import keyword_names, reject_unknown_keywords, reject_unsupported_values
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.route_prefix import validate_route_prefix
from serve_nb.app_builder import build_app
from serve_nb.core.graph import AppGraph
from serve_nb.core.snapshots import STATUS_KEY
from serve_nb.core.status import format_duration, init_report_due
from serve_nb.deployment import Application
from serve_nb.exceptions import (
    ControllerUnreachableError,
    DeployConflictError,
    DeployError,
    PortInUseError,
    RayServeException,
    port_in_use_message,
)
from serve_nb.types import ApplicationStatus, ProxyStatus, ServeStatus

#: ``serve.run`` keywords of Ray Serve 2.60 that serve_nb does not implement, with the default it accepts.
_RUN_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "_local_testing_mode": False, "external_scaler_enabled": False, "controller_options": None,
}
logger = logging.getLogger("serve_nb")
#: A wait on the status also reads it directly this often, in case a long-poll push is late.
STATUS_RECHECK_S = 2.0


def _bootstrap() -> Any:
    """``serve_nb.bootstrap`` (imported on first use: it loads Ray)."""
    from serve_nb import bootstrap

    return bootstrap


def _data_client() -> Any:
    """``serve_nb.data.client`` (imported on first use: it loads Ray)."""
    from serve_nb.data import client

    return client


def connect(address: str | None = None) -> str:
    """Connect this process to Ray: a local one by default (started, or joined if one runs here),
    or an existing cluster at ``host:port`` / ``ray://host:port``. Returns a one-line description."""
    import ray

    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address is None or address.split("://")[-1] == current:
            return _describe_cluster(address)
        _data_client().forget_client()  # moving to another cluster: drop this one's routers and feed
        ray.shutdown()
    _bootstrap().ensure_ray(address)
    return _describe_cluster(address)


def _describe_cluster(address: str | None) -> str:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    where = f"Ray at {address}" if address else f"local Ray ({ray.get_runtime_context().gcs_address})"
    return f"Connected to {where}: {len(nodes)} node(s), {cpus:g} CPU(s)."


def start(
    proxy_location: ProxyLocation | str | None = None,
    http_options: HTTPOptions | dict[str, Any] | None = None,
    grpc_options: Any = None,
    logging_config: Any = None,
    tracing_config: Any = None,
    controller_options: Any = None,
    **unknown: Any,
) -> None:
    """Connect to the running serve_nb controller, or start one (and Ray, if needed).

    Takes Ray Serve 2.60's keywords. ``proxy_location`` sets where proxies run unless ``http_options`` names a
    ``location`` (which wins, as in Ray Serve). ``logging_config`` (a dict or LoggingConfig) is the proxies':
    their access lines (``enable_access_log``), ``encoding``, ``log_level`` and ``logs_dir``; unlike the HTTP
    options it also applies to a running serve_nb, from each proxy's next line. ``grpc_options``,
    ``tracing_config`` and ``controller_options`` are not supported yet and accepted only as None; any other
    keyword raises TypeError before anything starts. Returns once the HTTP proxies answer; raises with the
    reason (e.g. the port is taken) if one cannot.
    """
    reject_unknown_keywords("serve.start()", unknown, keyword_names(start))
    unsupported = {"grpc_options": grpc_options, "tracing_config": tracing_config,
                   "controller_options": controller_options}
    reject_unsupported_values("serve.start()", unsupported, dict.fromkeys(unsupported))
    logging_settings = None
    if logging_config is not None:
        logging_settings = LoggingConfig.parse(logging_config, "serve.start(logging_config=...)")
    options = _with_proxy_location(HTTPOptions.from_user(http_options), http_options, proxy_location)
    client = _bootstrap().connect_client(create=True, http_options=options, logging_config=logging_settings)
    if logging_settings is not None:  # a controller that was already running keeps its own until told
        applied = _ask_controller(client.controller.set_logging_config.remote(logging_settings),
                                  "serve.start(logging_config=...)")
        if not applied:
            warnings.warn("serve.start(logging_config=...): not every HTTP proxy confirmed the new logging config "
                          "within 10 s; serve.status() shows which proxies are unhealthy.", stacklevel=2)
    if http_options is not None and client.info.http_options != options:
        warnings.warn(
            f"serve_nb is already running with http_options {client.info.http_options}; the new options are "
            "ignored. Call serve.shutdown() first to change them.",
            stacklevel=2,
        )
    _wait_for_proxies(client.info.http_options)


def _with_proxy_location(
    options: HTTPOptions, given: HTTPOptions | dict[str, Any] | None, proxy_location: ProxyLocation | str | None
) -> HTTPOptions:
    """``options`` with ``proxy_location`` applied, unless the user's ``http_options`` set a location themselves."""
    if proxy_location is None:
        return options
    valid = ", ".join(repr(member.value) for member in ProxyLocation)
    if proxy_location == "Disabled":  # Ray Serve 2.60's name for NoServer
        proxy_location = ProxyLocation.NoServer
    if proxy_location not in {member.value for member in ProxyLocation}:
        raise ValueError(f"serve.start(): proxy_location must be one of {valid} or 'Disabled', got {proxy_location!r}.")
    location = ProxyLocation(proxy_location)
    if isinstance(given, HTTPOptions) or (isinstance(given, dict) and "location" in given):
        return options
    return dataclasses.replace(options, location=location)


def _wait_for_proxies(options: HTTPOptions) -> None:
    if options.location == "NoServer":
        return
    status = _wait_for_status(
        lambda s: bool(s.proxies) and all(p != ProxyStatus.STARTING for p in s.proxies.values()),
        timeout_s=options.start_timeout_s,
        what=f"the HTTP proxies to start on {options.host}:{options.port}",
    )
    bad = [p for p in status.proxy_details.values() if p.status != ProxyStatus.HEALTHY]
    if bad:
        if port_in_use_message(options.host, options.port) in bad[0].message:
            raise PortInUseError(options.host, options.port)
        raise RayServeException(f"The HTTP proxy could not start: {bad[0].message}")


def run(
    target: Application,
    blocking: bool = False,
    name: str = "default",
    route_prefix: str | None = "/",
    logging_config: Any = None,
    _local_testing_mode: bool = False,
    external_scaler_enabled: bool = False,
    controller_options: Any = None,
    *,
    _blocking: bool = True,
    **unknown: Any,
) -> Any:
    """Deploy (or update in place) application ``name`` and return a handle to its ingress.

    With ``_blocking`` (the default) returns once every replica is up, raising DeployError with
    the user's traceback if the app fails. ``blocking=True`` then keeps serving until Ctrl-C,
    as Ray Serve's does.

    ``logging_config`` (a dict or LoggingConfig) is the application's: for each deployment that sets none.

    Every argument is checked before anything is touched: a misspelt keyword (``nmae="exp"``) raises
    TypeError instead of redeploying the ``default`` app, a bad ``route_prefix`` or ``logging_config`` raises
    ValueError, and the Ray Serve keywords serve_nb does not support yet (``_local_testing_mode``,
    ``external_scaler_enabled``, ``controller_options``) are accepted only at their defaults.
    """
    reject_unknown_keywords("serve.run()", unknown, keyword_names(run))
    reject_unsupported_values(
        "serve.run()",
        {"_local_testing_mode": _local_testing_mode, "external_scaler_enabled": external_scaler_enabled,
         "controller_options": controller_options},
        _RUN_UNSUPPORTED_DEFAULTS,
    )
    if not isinstance(name, str) or not name:
        raise ValueError(f"Application name must be a non-empty string, got {name!r}.")
    prefix = validate_route_prefix(route_prefix)
    app_logging = LoggingConfig.parse(logging_config, "serve.run(logging_config=...)") if logging_config else None
    graph, specs = build_app(target, name, logging_config=app_logging)
    for old, new in graph.renamed:
        logger.warning("serve.run('%s'): more than one deployment is named '%s'; renaming one to '%s'.", name, old, new)
    return deploy_built(graph, specs, name, prefix, wait=_blocking, block=blocking)


def deploy_built(graph: AppGraph, specs: list[Any], name: str, prefix: str | None, *, wait: bool = True,
                 block: bool = False) -> Any:
    """Deploy an application already built (``app_builder.build_app``) and checked; ``serve.run`` and config
    files both end here. ``wait``: until every replica is up (DeployError if it fails); ``block``: then serve
    until Ctrl-C."""
    from serve_nb.data.handle import DeploymentHandle

    client = _bootstrap().connect_client(create=True)

    error = _ask_controller(client.controller.deploy_app.remote(name, prefix, graph.ingress, specs), f"serve.run('{name}')",
                            DeployError)
    if error:
        raise DeployConflictError(error)
    if prefix is not None:  # proxies and replicas start at the same time; wait for both
        _wait_for_proxies(client.info.http_options)
    handle = DeploymentHandle(graph.ingress, name)
    if wait:
        wait_for_app(name, prefix)
    if block:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return handle


def wait_for_app(name: str, prefix: str | None) -> None:
    """Until application ``name`` runs and every proxy routes ``prefix`` to it; DeployError if it failed."""
    client = _bootstrap().connect_client(create=False)
    status = _wait_for_deploy(client, name)
    app = status.applications[name]
    if app.status == ApplicationStatus.DEPLOY_FAILED:
        raise DeployError(f"Application '{name}' failed to deploy. {app.message}")
    if prefix is not None and client.info.http_options.location != "NoServer":
        _ask_controller(client.controller.wait_for_route.remote(prefix, name), f"serve.run('{name}')", DeployError)
    _bootstrap().keep_spare_worker_soon()  # after the deploy, so it never competes with this deploy's own replicas


def _ask_controller(ref: Any, what: str, error: type[RayServeException] = RayServeException,
                    timeout_s: float | None = None) -> Any:
    """The controller's answer. An error raised inside the controller becomes ``error`` (DeployError for
    serve.run) with the original type and message: never a RayTaskError carrying the controller's traceback.
    With ``timeout_s``, no answer in that time raises ControllerUnreachableError (a controller being
    restarted by Ray answers only after the restart, about a minute later)."""
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ControllerUnreachableError(what, timeout_s or 0.0) from None
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        raise error(f"{what} failed: {type(cause).__name__}: {cause}") from None


def _wait_for_deploy(client: Any, name: str) -> ServeStatus:
    """Wait until application ``name`` is RUNNING or DEPLOY_FAILED, saying which replicas keep it waiting.

    Raises RayServeException at once if the app is deleted meanwhile. A KeyboardInterrupt (Ctrl-C, or
    the notebook's interrupt) stops only the wait: the deploy goes on, and the message says how to
    follow or cancel it.
    """
    # The deploy's own time: a status older than it (a long-poll value still in flight) is not about it.
    deployed = _ask_controller(client.controller.get_status.remote(), f"serve.run('{name}')").applications.get(name)
    if deployed is None:
        raise RayServeException(f"Application '{name}' was deleted while serve.run was waiting for it to start.")
    deployed_at = deployed.last_deployed_time_s
    warned: set[str] = set()
    reported: list[float] = []  # when, in seconds of __init__, serve.run last said a replica is slow
    seen = False

    def settled(s: ServeStatus) -> bool:
        nonlocal seen
        app = s.applications.get(name)
        if app is None or app.last_deployed_time_s < deployed_at:
            if app is None and seen:
                raise RayServeException(f"Application '{name}' was deleted while serve.run was waiting for it to start.")
            return False
        seen = True
        if app.status == ApplicationStatus.DELETING:
            raise RayServeException(f"Application '{name}' was deleted while serve.run was waiting for it to start.")
        for dep in app.deployments.values():
            if dep.waiting_for_resources and dep.name not in warned:
                warned.add(dep.name)
                logger.warning("serve.run('%s'): deployment '%s' is not up yet. %s", name, dep.name, dep.message)
        slow = {(dep.name, rid): s for dep in app.deployments.values() for rid, s in dep.initializing_for_s.items()}
        if slow and init_report_due(max(slow.values()), reported[-1] if reported else None):
            (dname, rid), longest = max(slow.items(), key=lambda kv: kv[1])
            reported.append(longest)
            logger.warning(
                "serve.run('%s'): replica %s of deployment '%s' has been in __init__ for %s; still waiting. "
                "Interrupt to stop waiting (the deploy goes on), or serve.delete('%s') to cancel it.",
                name, rid, dname, format_duration(longest), name,
            )
        return app.status in (ApplicationStatus.RUNNING, ApplicationStatus.DEPLOY_FAILED)

    try:
        return _wait_for_status(settled)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"serve.run('{name}') stopped waiting; the application is still deploying. "
            f"serve.status() shows its progress; serve.delete('{name}') cancels it."
        ) from None


def _wait_for_status(
    predicate: Callable[[ServeStatus], bool], timeout_s: float | None = None, what: str = "the status"
) -> ServeStatus:
    """Block until the controller's status satisfies ``predicate``: pushed by the long-poll, and read
    directly every ``STATUS_RECHECK_S`` in case the push lags. ``predicate`` may raise to end the wait
    with that error. The wait is interruptible (it blocks in short slices of the main thread)."""
    client = _data_client().current_client()
    if client is None:
        raise RayServeException("serve_nb is not running.")
    done: concurrent.futures.Future[ServeStatus] = concurrent.futures.Future()
    lock = threading.Lock()  # the long-poll thread and this one both offer statuses

    def offer(status: ServeStatus | None) -> None:
        with lock:
            if status is None or done.done():
                return
            try:
                if predicate(status):
                    done.set_result(status)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                done.set_exception(exc)

    sub = client.longpoll.subscribe(STATUS_KEY, offer)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            left = STATUS_RECHECK_S if deadline is None else min(STATUS_RECHECK_S, deadline - time.monotonic())
            try:
                return done.result(max(0.0, left))
            except concurrent.futures.TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"Timed out after {timeout_s}s waiting for {what}.") from None
                offer(_ask_controller(client.controller.get_status.remote(), f"waiting for {what}"))
    finally:
        sub.cancel()


def delete(name: str, _blocking: bool = True) -> None:
    """Delete application ``name``: its route goes at once, its replicas drain and stop.

    Deleting an application that does not exist changes nothing and is not an error, as in Ray Serve
    2.60 (its controller skips unknown names), so cleanup code can delete unconditionally; serve_nb also
    logs a warning naming the running applications, because a misspelt name would otherwise leave the
    intended app running unnoticed. Raises RayServeException if serve_nb is not running (as Ray Serve does).
    """
    client = _data_client().get_client()
    if client is None:
        raise RayServeException(
            f"serve_nb is not running in this Ray cluster, so there is no application '{name}' to delete. "
            "Connect to the cluster that runs it (serve.connect(address)) first."
        )
    running = _ask_controller(client.controller.get_status.remote(), f"serve.delete('{name}')").applications
    if name not in running:
        logger.warning(
            "serve.delete('%s'): there is no application named '%s'; nothing was deleted. Running applications: %s.",
            name, name, ", ".join(sorted(running)) or "(none)",
        )
        return
    _ask_controller(client.controller.delete_apps.remote([name]), f"serve.delete('{name}')")
    if _blocking:
        _wait_for_status(lambda s: name not in s.applications)


def scale_deployment(app_name: str, deployment_name: str, num_replicas: int) -> None:
    """Set a fixed-size deployment's replica count, in place, without redeploying its application.

    A serve_nb extension: Ray Serve has no such call (there you redeploy with a new
    ``num_replicas``). It exists so a notebook user (and the widget's +/- buttons) can try a
    size without re-running the cell. Returns once the controller has taken the new target; the
    replicas start or stop afterwards (watch ``serve.status()`` or ``serve.feed``).

    Raises ValueError for a bad count, an unknown application or deployment, or a deployment
    that autoscales (change its ``autoscaling_config`` instead); RayServeException if serve_nb
    is not running.
    """
    for what, value in (("app_name", app_name), ("deployment_name", deployment_name)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what} must be a non-empty string, got {value!r}.")
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(
            f"num_replicas must be an integer >= 1, got {num_replicas!r}. To stop every replica, delete the app."
        )
    client = _data_client().get_client()
    if client is None:
        raise RayServeException("serve_nb is not running; call serve.start() or serve.run() first.")
    error = _ask_controller(client.controller.scale_deployment.remote(app_name, deployment_name, num_replicas),
                            "serve.scale_deployment()")
    if error:
        raise ValueError(error)


def set_autoscaling(app_name: str, deployment_name: str, autoscaling_config: dict | None,
                    num_replicas: int | None = None) -> None:
    """Switch a deployment in place between autoscaling (``autoscaling_config``) and a fixed ``num_replicas``
    (``autoscaling_config=None``): the widget's Manual/Adaptive switch. ValueError for bad settings or names."""
    client = _data_client().get_client()
    if client is None:
        raise RayServeException("serve_nb is not running; call serve.start() or serve.run() first.")
    error = _ask_controller(client.controller.set_autoscaling.remote(app_name, deployment_name, autoscaling_config,
                                                                     num_replicas), "serve.set_autoscaling()")
    if error:
        raise ValueError(error)


def ray_dashboard_url() -> str | None:
    """The Ray dashboard's URL when the connected Ray runs one (the widgets link to it), else None."""
    from serve_nb import ray_private

    address = ray_private.dashboard_address()
    return None if not address else address if "://" in address else f"http://{address}"


#: A live controller answers serve.status() in milliseconds; one that has not within this is unreachable.
STATUS_TIMEOUT_S = 5.0


def status() -> ServeStatus:
    """Every application's status. Starts nothing: without a controller, an empty status. Raises
    ControllerUnreachableError if the controller has not answered within ``STATUS_TIMEOUT_S``."""
    client = _data_client().get_client()
    if client is None:
        return ServeStatus()

    return _ask_controller(client.controller.get_status.remote(), "serve.status()", timeout_s=STATUS_TIMEOUT_S)


def shutdown() -> None:
    """Delete every application and stop the controller; serve.run starts afresh afterwards."""
    import ray

    if not ray.is_initialized():
        return
    controller = _bootstrap().get_controller(create=False)
    _data_client().forget_client()  # stop this process's long-poll before the controller goes away
    if controller is not None:
        try:
            ray.get(controller.shutdown.remote())
        finally:
            ray.kill(controller, no_restart=True)
            _wait_until_gone()


def _wait_until_gone(timeout_s: float = 10.0) -> None:
    from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.02)


def get_app_handle(name: str) -> Any:
    """A handle to the ingress of running application ``name``."""
    from serve_nb.data.handle import DeploymentHandle

    app = status().applications.get(name)
    if app is None:
        raise RayServeException(f"Application '{name}' does not exist. Running applications: {_app_names()}.")
    return DeploymentHandle(app.ingress, name)


def get_deployment_handle(
    deployment_name: str, app_name: str | None = None, _check_exists: bool = True, _record_telemetry: bool = True
) -> Any:
    """A handle to any deployment; ``app_name`` defaults to the caller's own app inside a replica.

    The keywords are Ray Serve's: ``_check_exists=False`` skips the existence check (one controller call);
    ``_record_telemetry`` is accepted and ignored (serve_nb records no telemetry).
    """
    from serve_nb.data.context import _context
    from serve_nb.data.handle import DeploymentHandle

    if app_name is None:
        app_name = _context.app_name if _context is not None else "default"
    if not _check_exists:
        return DeploymentHandle(deployment_name, app_name)
    app = status().applications.get(app_name)
    if app is None:
        raise RayServeException(f"Application '{app_name}' does not exist. Running applications: {_app_names()}.")
    if deployment_name not in app.deployments:
        raise RayServeException(
            f"Application '{app_name}' has no deployment '{deployment_name}'. "
            f"Its deployments: {', '.join(sorted(app.deployments)) or '(none)'}."
        )
    return DeploymentHandle(deployment_name, app_name)


def _app_names() -> str:
    names = sorted(status().applications)
    return ", ".join(names) if names else "(none)"
