"""What each ``serve_nb`` command does. Config and import errors are found before the cluster is touched."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from serve_nb.cli import cluster

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def describe(exc: BaseException) -> str:
    """One line for stderr: the message of errors that explain themselves, else the type and the first line."""
    from serve_nb.core.deploy_schema import ConfigError
    from serve_nb.exceptions import RayServeException

    text = str(exc).strip()
    if isinstance(exc, (ConfigError, cluster.NoCluster, RayServeException)) or type(exc).__name__ == "ExportError":
        return text.replace("\n", " | ")
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _config_of(args: argparse.Namespace) -> Any:
    """A config path, or for ``module:app`` a one-application config dict."""
    target = args.target
    if target.endswith(CONFIG_SUFFIXES) or Path(target).is_file():
        if args.name or args.route_prefix:
            raise ValueError("--name and --route-prefix apply to an import path; set them in the config file instead.")
        return target
    app: dict[str, Any] = {"name": args.name or "default", "import_path": target}
    app["route_prefix"] = args.route_prefix or "/"
    return {"applications": [app]}


def run(args: argparse.Namespace) -> int:
    from serve_nb import config_files

    config = _config_of(args)
    parsed, base_dir = config_files.read_config(config)
    source = config if isinstance(config, str) else "<command line>"
    built = config_files.build_apps(parsed, source, base_dir)  # the user's code imports, before Ray starts
    started = cluster.connect(args.address, may_start=True)
    keep_serving = args.non_blocking and not started  # on a cluster that outlives this command: leave the apps
    try:
        config_files.apply(parsed, built)
        for app in built:
            print(f"Deployed application '{app.config.name}'{_where(app.config.route_prefix)}.", flush=True)
        if args.non_blocking:
            if started:
                print("The local Ray this command started stops with it; use `ray start --head` for one that stays.")
            return 0
        followed = _follow_logs([app.config.name for app in built])
        if args.reload:
            _reload_loop(config, source, base_dir, built)
        else:
            print("Serving; Ctrl-C to stop.", flush=True)
            _wait_forever()
        for subscription in followed:
            subscription.cancel()
    except KeyboardInterrupt:
        pass
    finally:
        if not keep_serving:
            _stop(started)
    return 0


def _where(route_prefix: str | None) -> str:
    if route_prefix is None:
        return " (no HTTP route: call it through a handle)"
    from serve_nb import api

    address = next((d.address for d in api.status().proxy_details.values()), None)
    return f" at http://{address}{'' if route_prefix == '/' else route_prefix}" if address else ""


def _wait_forever() -> None:
    done = threading.Event()
    while not done.wait(1.0):  # the main thread stays interruptible by Ctrl-C
        pass


def _stop(started_here: bool) -> None:
    """Ctrl-C: shut serve_nb down cleanly (every app, the controller, the proxies), then our own Ray."""
    import ray

    from serve_nb import api

    print("Shutting down serve_nb...", file=sys.stderr, flush=True)
    try:
        api.shutdown()
    finally:
        if started_here:
            ray.shutdown()
            cluster.clear_run_cluster()


def _follow_logs(app_names: list[str]) -> list[Any]:
    """Print the replicas' new log lines as the controller's feed brings them."""
    from serve_nb import feed

    def printer(name: str) -> Any:
        seen: list[str] = []

        def on_detail(detail: Any) -> None:
            nonlocal seen
            lines = list(detail.logs) if detail is not None else []
            for line in new_lines(seen, lines):
                print(f"[{name}] {line}", flush=True)
            seen = lines

        return on_detail

    return [feed.subscribe(feed.app(name), printer(name)) for name in app_names]


def new_lines(seen: list[str], lines: list[str]) -> list[str]:
    """The lines of ``lines`` (a sliding window of recent log lines) not in ``seen``, the window before."""
    for start in range(len(seen) + 1):
        overlap = seen[start:]
        if lines[: len(overlap)] == overlap:
            return lines[len(overlap):]
    return lines


def _reload_loop(config: Any, source: str, base_dir: Path, built: list[Any]) -> None:
    from watchfiles import watch

    from serve_nb import config_files

    paths = [str(base_dir)] + ([str(Path(config).resolve())] if isinstance(config, str) else [])
    print(f"Watching {base_dir} for changes; Ctrl-C to stop.", flush=True)
    for _changes in watch(*paths, watch_filter=lambda _change, path: path.endswith((".py", *CONFIG_SUFFIXES)),
                          raise_interrupt=True):
        started = time.monotonic()
        try:
            config_files.forget_user_modules(base_dir)
            parsed, _ = config_files.read_config(config)
            new_built = config_files.build_apps(parsed, source, base_dir)
            config_files.apply(parsed, new_built)
        except Exception as exc:  # noqa: BLE001 - a broken save: say why, keep serving the last good version
            print(f"Reload failed: {describe(exc)} (still serving the last good version)", file=sys.stderr, flush=True)
            continue
        summary = config_files.describe_changes(built, new_built)
        print(f"Reloaded in {time.monotonic() - started:.2f} s: {summary}", flush=True)
        built = new_built


def deploy(args: argparse.Namespace) -> int:
    from serve_nb import config_files

    parsed, base_dir = config_files.read_config(args.config)
    built = config_files.build_apps(parsed, args.config, base_dir)
    cluster.connect(args.address, may_start=False)
    config_files.apply(parsed, built, wait=False)
    print(f"Sent {len(built)} application(s) to the cluster; `serve_nb status` shows their progress.")
    return 0


def status(args: argparse.Namespace) -> int:
    import yaml

    from serve_nb import api

    cluster.connect(args.address, may_start=False)
    print(yaml.safe_dump(status_dict(api.status()), sort_keys=False), end="")
    return 0


def status_dict(status: Any) -> dict[str, Any]:
    """``serve.status()`` in the shape of Ray Serve's ``serve status`` output."""
    return {
        "proxies": {node: str(state) for node, state in status.proxies.items()},
        "applications": {
            name: {
                "status": str(app.status),
                "message": app.message,
                "last_deployed_time_s": app.last_deployed_time_s,
                "deployments": {
                    dname: {"status": str(dep.status), "replica_states": dict(dep.replica_states), "message": dep.message}
                    for dname, dep in app.deployments.items()
                },
            }
            for name, app in status.applications.items()
        },
        "target_capacity": None,
    }


def config(args: argparse.Namespace) -> int:
    import yaml

    from serve_nb import api, config_files

    cluster.connect(args.address, may_start=False)
    names = [args.name] if args.name else sorted(api.status().applications)
    found = config_files.applied_configs(names)
    if not found:
        print("No config has been deployed.")
        return 0
    print("\n---\n\n".join(yaml.safe_dump(found[n], sort_keys=False) for n in names if n in found), end="")
    return 0


def build(args: argparse.Namespace) -> int:
    from serve_nb import config_files

    text = config_files.build_config(args.import_path)
    if args.output:
        Path(args.output).write_text(text)
        print(f"Wrote {args.output}.")
    else:
        print(text, end="")
    return 0


def shutdown(args: argparse.Namespace) -> int:
    from serve_nb import api, config_files

    if not args.yes:
        answer = input("Shut down serve_nb on the cluster and delete every application? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing was shut down.")
            return 1
    cluster.connect(args.address, may_start=False)
    names = list(api.status().applications)
    api.shutdown()
    config_files.forget_applied(names)
    print("serve_nb shut down.")
    return 0


def export(args: argparse.Namespace) -> int:
    from serve_nb.notebook.export_files import export_notebook_file

    written = export_notebook_file(Path(args.notebook), Path(args.output), args.app)
    print("Wrote " + " and ".join(str(p) for p in written) + f". Run it with: serve_nb run {written[-1]}")
    return 0
