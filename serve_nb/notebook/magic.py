"""``%%serve`` and the line magics. Loaded with ``%load_ext serve_nb``.

``%%serve`` runs the cell in the user's namespace, picks the ingress (the cell's
``@serve.deployment`` object, else the last class or function it defines), applies the flags as
deployment options, binds ``--args`` and runs it as one application. Re-running the cell updates
that application in place, and the cell's widget with it: the same widget, updated in place with its
stages as the deploy goes and its failure kept if it fails (``notebook/deploy_flow.py``).
``widget_for(app)`` returns the live widget of an application from any later cell.
``%serve_export`` writes the kernel's ``%%serve`` apps as a module and a Ray Serve config, from the inputs
the kernel ran (``notebook/export_files.py``, ``core/export.py``).
"""

from __future__ import annotations

import inspect
import linecache
import os
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from serve_nb.core.cell_traceback import CellSource
from serve_nb.core.cellspec import CellSpecError, default_app_name, defined_names, parse_line, pick_ingress
from serve_nb.notebook.deploy_state import DeployState
from serve_nb.notebook.export_files import RanInput, cells_of_kernel, module_name_for, write_export

if TYPE_CHECKING:  # ipywidgets is imported only when a widget is first shown
    from serve_nb.notebook.widgets import AppWidget


@magics_class
class ServeMagics(Magics):
    """The magics of one IPython shell, and the widgets its ``%%serve`` cells show."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._cell_id: str | None = None
        self._store_history = False  # whether the running cell is numbered (IPython counted it before it ran)
        self._widgets: dict[str, AppWidget] = {}  # cell id (or "app:<name>") -> its live widget, oldest first
        # The display id each widget was last shown under (a new widget takes the old one's place in the same run
        # with update_display), and the keys shown in this cell's run.
        self._display_ids: dict[str, str] = {}
        self._displays: dict[str, Any] = {}
        self._shown_now: set[str] = set()
        # Every input run since the magics were loaded, with its history session (%reset starts another, In [1]
        # again), for %serve_export: the history lacks inputs run with store_history=False (as nbval runs cells),
        # and only recent IPython versions record which inputs raised.
        self._ran: list[tuple[int, RanInput]] = []
        self._deploy_went_on = False  # set by the running %%serve cell when interrupted while waiting
        # The proxies' host/port %serve_connect asked for; kept after a failed start so a later %%serve asks for
        # them again (and says why it cannot) instead of quietly starting Serve on the default port.
        self._http_options: dict[str, Any] = {}

    def pre_run_cell(self, info: Any) -> None:
        self._cell_id = getattr(info, "cell_id", None)
        self._store_history = bool(getattr(info, "store_history", False))
        self._deploy_went_on = False
        self._shown_now = set()

    def post_run_cell(self, result: Any) -> None:
        info = result.info
        stored = bool(getattr(info, "store_history", False))
        # A %%serve cell interrupted while waiting for replicas raised, but its app deploys: it counts as run.
        ran = RanInput(info.raw_cell or "", result.execution_count if stored else None,
                       result.success or self._deploy_went_on)
        self._ran.append((self.shell.history_manager.session_number, ran))

    # -- %%serve -----------------------------------------------------------------------------

    @cell_magic("serve")
    def serve_cell(self, line: str, cell: str) -> None:
        """Deploy the class or function this cell defines; see ``%%serve --help`` in the README.

        Re-running the cell updates its widget in place: the same widget, shown again at once (the front end
        clears a cell's output when it runs) with a progress line per stage, never a blank output. A failed
        deploy keeps the widget with the error and a Retry button, and the cell still raises a short
        UsageError: the widget says what went wrong, and the error makes "Run All" stop here instead of
        running later cells against an app that is not there (or is the old version).
        """
        import serve_nb as serve
        from serve_nb.deployment import Deployment
        from serve_nb.notebook import deploy_flow
        from serve_nb.notebook.deploy_progress import initial_state

        try:
            spec = parse_line(line)
        except CellSpecError as exc:
            raise UsageError(str(exc)) from None
        early = self._show_again(initial_state(http=spec.route_prefix is not None))
        names = defined_names(cell)
        try:
            self._run_in_user_namespace(cell)
        except BaseException:
            if early is not None:  # nothing deployed: the widget shows the app as it was
                early.set_deploy_state(None)
            raise
        ns = self.shell.user_ns
        candidates = [ns[n] for n in names if n in ns]
        target = pick_ingress(candidates, lambda v: isinstance(v, Deployment),
                              lambda v: inspect.isclass(v) or inspect.isfunction(v))
        if target is None:
            if early is not None:
                early.set_deploy_state(None)
            raise UsageError("%%serve: the cell defines no class, function or @serve.deployment to deploy.")
        app_name = spec.name or "default"
        widget: AppWidget | None = early
        try:
            if self._http_options:
                self._start_http("%%serve")
            deployment = target if isinstance(target, Deployment) else serve.deployment(target)
            deployment = deployment.options(**spec.deployment_options())
            args, kwargs = self._bind_args(spec.args)
            app_name = spec.name or default_app_name(deployment.name)
            key = self._cell_id or f"app:{app_name}"
            widget = self._widget(key, app_name, target)
            request = deploy_flow.DeployRequest(
                app_name, lambda: deployment.bind(*args, **kwargs), spec.app_route_prefix(app_name), spec.wait,
                spec.keep_failed, self._locate, lambda failed: self._widget_for_retry(key, failed),
            )
            widget.handle = deploy_flow.deploy(request, widget)
        except UsageError:
            if widget is not None:  # nothing deployed: the widget shows the app as it is
                widget.set_deploy_state(None)
            raise
        except deploy_flow.DeployFailed as exc:
            raise UsageError(f"%%serve: {exc.summary}\n\nThe widget shows where in the cell, and the replicas' "
                             "last log lines. Fix the cell and run it again.") from None
        except KeyboardInterrupt as exc:
            # Interrupted while waiting for replicas: the deploy goes on; the widget keeps following the app.
            self._deploy_went_on = True
            if widget is not None:
                widget.set_deploy_state(None)
                try:
                    widget.handle = serve.get_app_handle(app_name)
                except serve.exceptions.RayServeException:  # deleted meanwhile: the widget says so
                    pass
            raise UsageError(f"%%serve: {exc}") from None
        except (serve.exceptions.RayServeException, ValueError, TypeError) as exc:
            if widget is not None:
                widget.set_deploy_state(None)
            raise UsageError(f"%%serve: {exc}\n\nFix the cell and run it again.") from None

    def _show_again(self, state: DeployState) -> AppWidget | None:
        """A re-run of a cell that showed a widget: show that widget again at once, at its first stage, so the
        output (cleared by the front end as the cell starts) is blank only until this message arrives."""
        widget = self._widgets.get(self._cell_id) if self._cell_id else None
        if widget is None or not widget.listening:
            return None
        widget.set_retry(None)
        widget.set_deploy_state(state)
        self._display(self._cell_id, widget)
        return widget

    def _widget(self, key: str, app_name: str, ingress: Any) -> AppWidget:
        """The widget this run shows: the cell's own while it follows the same app; otherwise a new one, in the
        old one's place if that is already shown in this run's output (the old one is closed, its whole tree)."""
        from serve_nb.notebook.widgets import AppWidget

        widget = self._widgets.get(key)
        if widget is not None and widget.app_name == app_name and widget.listening:
            widget.ingress = ingress
            if key not in self._shown_now:
                self._display(key, widget)
            return widget
        new = AppWidget(app_name, None, ingress=ingress)
        self._replace(key, new)
        return new

    def _replace(self, key: str, new: AppWidget) -> None:
        old = self._widgets.pop(key, None)
        handle = self._displays.get(key)
        if handle is not None and key in self._shown_now:
            handle.update(new)
        else:
            self._display(key, new)
        self._widgets[key] = new
        if old is not None:
            old.close()

    def _display(self, key: str, widget: AppWidget) -> None:
        """Show ``widget`` in this cell's output under a display id of this showing: a new widget can take its
        place there (``update``). A new id each time: a front end may still map an old id to outputs the cell's
        re-run cleared (nbclient does, and fails updating them)."""
        self._display_ids[key] = f"serve-nb-{uuid.uuid4().hex}"
        self._displays[key] = display(widget, display_id=self._display_ids[key])
        self._shown_now.add(key)

    def _widget_for_retry(self, key: str, failed: AppWidget) -> AppWidget:
        """Retry deploys on the failed widget while it still follows its app; a failed first deploy's app was
        removed (the widget stopped following it), so a new widget takes its place in the cell's output."""
        from serve_nb.notebook.widgets import AppWidget

        if failed.listening or self._widgets.get(key) is not failed:
            return failed
        new = AppWidget(failed.app_name, None, ingress=failed.ingress)
        new.set_deploy_state(failed.deploy_state)
        self._shown_now.add(key)  # replace it where it is shown
        self._replace(key, new)
        return new

    def _locate(self, filename: str) -> CellSource | None:
        """The cell a traceback's file name stands for (IPython names each cell's code, and caches its lines)."""
        label = self.shell.compile.format_code_name(filename)
        if label is None:
            return None
        number = label[1].removeprefix("In[").removesuffix("]")
        lines = linecache.getlines(filename)
        return CellSource(int(number), [line.rstrip("\n") for line in lines]) if number.isdigit() else None

    def _run_in_user_namespace(self, cell: str) -> None:
        """Execute the cell like a normal one: its names land in the user's namespace, and tracebacks
        show its source."""
        compiler = self.shell.compile
        # The cell's own In[N]: IPython has already counted a cell it keeps in the history when the magic runs.
        number = self.shell.execution_count - 1 if self._store_history else self.shell.execution_count
        filename = compiler.cache(cell, number)
        exec(compiler(cell, filename, "exec"), self.shell.user_ns)

    def _bind_args(self, expr: str | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if not expr:
            return (), {}

        def collect(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return args, kwargs

        try:
            return eval(f"__serve_nb_collect__({expr})", self.shell.user_ns, {"__serve_nb_collect__": collect})
        except Exception as exc:
            raise UsageError(f"%%serve: --args {expr!r} could not be evaluated: {type(exc).__name__}: {exc}") from None

    def widget_for(self, app_name: str) -> AppWidget:
        """The widget a ``%%serve`` cell of this shell last showed for ``app_name``."""
        for widget in reversed(self._widgets.values()):
            if widget.app_name == app_name:
                return widget
        shown = sorted({w.app_name for w in self._widgets.values()})
        raise LookupError(f"No %%serve cell has shown a widget for '{app_name}'. "
                          f"Widgets shown: {', '.join(shown) or '(none)'}.")

    # -- line magics -------------------------------------------------------------------------

    @magic_arguments()
    @argument("address", nargs="?", help="host:port or ray://host:port of a Ray cluster (default: a local Ray)")
    @argument("--port", type=int, help="the HTTP proxies' port (default 8000)")
    @argument("--host", help="the address the HTTP proxies listen on (default 127.0.0.1)")
    @line_magic("serve_connect")
    def serve_connect(self, line: str) -> None:
        """%serve_connect [ADDRESS] [--port N] [--host H]: a local Ray (default), or host:port / ray://host:port;
        with --port or --host, Serve starts there with its HTTP proxies on that address."""
        import serve_nb as serve

        args = parse_argstring(self.serve_connect, line)
        if args.port is not None and not 0 < args.port < 65536:
            raise UsageError(f"%serve_connect: --port must be between 1 and 65535, got {args.port}.")
        if args.host is not None and not args.host.strip():
            raise UsageError("%serve_connect: --host must not be empty.")
        try:
            print(serve.connect(args.address))
        except Exception as exc:
            raise UsageError(f"%serve_connect: could not connect to {args.address or 'a local Ray'}: {exc}") from None
        requested = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
        if requested:
            self._http_options = requested
            self._start_http("%serve_connect")
            defaults = serve.HTTPOptions()
            print(f"Serve's HTTP proxies listen on {args.host or defaults.host}:{args.port or defaults.port}.")

    def _start_http(self, magic: str) -> None:
        """Start Serve with the HTTP address %serve_connect asked for. A taken port is one line naming it and the
        flag to use; Serve, if this start left it with nothing deployed, is stopped so that flag can take effect
        (a running Serve keeps its address: serve.start ignores another one)."""
        import serve_nb as serve

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                serve.start(http_options=dict(self._http_options))
            except serve.exceptions.PortInUseError as exc:
                if not serve.status().applications:
                    serve.shutdown()
                raise UsageError(f"Port {exc.port} is taken; use %serve_connect --port {exc.port + 1}") from None
            except (serve.exceptions.RayServeException, ValueError, TypeError) as exc:
                raise UsageError(f"{magic}: Serve could not start its HTTP proxies: {exc}") from None
        ignored = [w for w in caught if "already running with http_options" in str(w.message)]
        if ignored:
            raise UsageError(f"{magic}: serve_nb already runs with other HTTP options; run %serve_shutdown first "
                             f"to move its proxies to {self._http_options}.")
        for warning in caught:  # anything else start() warned about still reaches the user
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    @line_magic("serve_status")
    def serve_status(self, line: str) -> None:
        """%serve_status: the live dashboard of every application."""
        from serve_nb.notebook.widgets import Dashboard

        display(Dashboard())

    @line_magic("serve_delete")
    def serve_delete(self, line: str) -> None:
        """%serve_delete APP: delete one application."""
        import serve_nb as serve

        name = line.strip()
        if not name:
            raise UsageError("%serve_delete needs an application name: %serve_delete APP")
        if name not in serve.status().applications:
            raise UsageError(f"%serve_delete: no application named '{name}'.")
        serve.delete(name)
        print(f"Deleted application '{name}'.")

    @magic_arguments()
    @argument("app", nargs="?", help="export only this application (default: every %%%%serve app)")
    @argument("-o", "--output", default="export", metavar="DIR",
              help="directory for <notebook>.py and serve_config.yaml (default: export)")
    @line_magic("serve_export")
    def serve_export(self, line: str) -> None:
        """%serve_export [APP] [-o DIR]: write this kernel's %%serve apps, as the kernel ran them, to
        DIR/<notebook>.py and DIR/serve_config.yaml, for ``serve_nb run DIR/serve_config.yaml``."""
        from serve_nb.core.export import ExportError

        args = parse_argstring(self.serve_export, line)
        # Jupyter names the notebook in the kernel (ipykernel copies JPY_SESSION_NAME into __session__).
        notebook = str(self.shell.user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME") or "")
        source = f"{Path(notebook).name} as its kernel ran it" if notebook else "the inputs a kernel ran"
        history = self.shell.history_manager
        # Inputs from before the magics were loaded come from the history; recent IPython versions record which
        # of them raised (history_manager.exceptions), older ones do not, and those are then exported as if run.
        failed = set(getattr(history, "exceptions", None) or ())
        ran = [r for session, r in self._ran if session == history.session_number]
        cells = cells_of_kernel(history.input_hist_raw, failed, ran)
        try:
            module, config = write_export(cells, module_name_for(notebook or "notebook"), Path(args.output), args.app,
                                          notebook=source, http_options=self._http_options)
        except (ExportError, OSError) as exc:
            raise UsageError(f"%serve_export: {exc}") from None
        print(f"Wrote {module} and {config}.\nRun it with: serve_nb run {config}")

    @line_magic("serve_shutdown")
    def serve_shutdown(self, line: str) -> None:
        """%serve_shutdown: delete every application and stop serve_nb's controller."""
        import serve_nb as serve

        serve.shutdown()
        for widget in self._widgets.values():  # kept on show (chart, logs) until their cells run again
            widget.show_gone("shut down")
        print("serve_nb shut down.")


def widget_for(app_name: str) -> AppWidget:
    """The live widget of application ``app_name`` as its ``%%serve`` cell showed it.

    For a later cell: read its ``.view``, call its ``.handle``, or ``display()`` it again.
    Raises LookupError when no ``%%serve`` cell in this kernel has shown one (for any app,
    ``serve_nb.widgets.AppWidget(name)`` builds a new widget instead).
    """
    shell = get_ipython()
    magics = shell.magics_manager.registry.get(ServeMagics.__name__) if shell is not None else None
    if magics is None:
        raise LookupError("The serve_nb magics are not loaded in this kernel: run %load_ext serve_nb first.")
    return magics.widget_for(app_name)


def load(shell: Any) -> None:
    """Register the magics with ``shell`` (``%load_ext serve_nb`` calls this)."""
    magics = ServeMagics(shell)
    shell.register_magics(magics)
    shell.events.register("pre_run_cell", magics.pre_run_cell)
    shell.events.register("post_run_cell", magics.post_run_cell)
