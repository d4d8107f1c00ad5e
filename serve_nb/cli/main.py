"""``serve_nb run | deploy | status | config | build | shutdown | export``: argument parsing and dispatch.

Every command exits 0 on success; on failure it prints one line on stderr saying what was wrong and what
to do, and exits 1 (2 for a usage error, from argparse). Ray's own start-up chatter stays out of the way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from serve_nb.cli import commands

_COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "run": ("Deploy a config file or an application (module:app) and serve until Ctrl-C.", commands.run),
    "deploy": ("Apply a config file to a running cluster and return (declarative, idempotent).", commands.deploy),
    "status": ("Print every application's status as YAML.", commands.status),
    "config": ("Print the config each application was last deployed with.", commands.config),
    "build": ("Write a config file for an application (module:app) with the options set in its code.", commands.build),
    "shutdown": ("Delete every application and stop serve_nb on the cluster.", commands.shutdown),
    "export": ("Turn a notebook's %%serve apps into a Python module and a config file.", commands.export),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve_nb", description="Run and manage serve_nb applications from a terminal (the commands of Ray "
                                     "Serve's `serve`), and export a notebook's %%serve apps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        text = _COMMANDS[name][0]  # help strings are %-formatted by argparse, descriptions are not
        return sub.add_parser(name, help=text.replace("%", "%%"), description=text)

    def address(p: argparse.ArgumentParser) -> None:
        p.add_argument("-a", "--address", help="Ray cluster (host:port or ray://...); default: RAY_ADDRESS, else a "
                                                "running cluster on this machine")

    p = command("run")
    p.add_argument("target", help="a config file (.yaml/.yml/.json) or an import path module:app")
    p.add_argument("--name", help="application name, for an import path (default: 'default')")
    p.add_argument("--route-prefix", help="route prefix, for an import path (default: '/')")
    p.add_argument("--reload", action="store_true", help="redeploy when the config or Python files change")
    p.add_argument("--non-blocking", action="store_true", help="return once deployed instead of serving until Ctrl-C")
    address(p)
    p = command("deploy")
    p.add_argument("config", help="a config file in Ray Serve's format")
    address(p)
    p = command("status")
    address(p)
    p = command("config")
    p.add_argument("--name", help="only this application")
    address(p)
    p = command("build")
    p.add_argument("import_path", help="module:app (an Application or a builder function)")
    p.add_argument("-o", "--output", help="write here instead of to stdout")
    p = command("shutdown")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    address(p)
    p = command("export")
    p.add_argument("notebook", help="the .ipynb file")
    p.add_argument("--app", help="only this app (default: every %%%%serve app)")
    p.add_argument("-o", "--output", required=True, help="directory for <notebook>.py and serve_config.yaml")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command][1](args)
    except KeyboardInterrupt:
        print("serve_nb: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, no traceback: the message says what to do
        print(f"serve_nb {args.command}: {commands.describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
