"""Turn per-repetition results into medians, a markdown report and a PNG of the scaling sweep."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

# (key, label, unit, target ratio serve_nb / Ray Serve or None, better)
FIGURES: list[tuple[str, str, str, str | None, str]] = [
    ("http_rps_32", "HTTP req/s, 32 connections", "req/s", "≥ 10×", "higher"),
    ("http_p50_ms_32", "HTTP p50, 32 connections", "ms", None, "lower"),
    ("http_p99_ms_32", "HTTP p99, 32 connections", "ms", None, "lower"),
    ("http_rps_1", "HTTP req/s, 1 connection", "req/s", None, "higher"),
    ("http_p50_ms_1", "HTTP p50, 1 connection", "ms", "≤ 0.2×", "lower"),
    ("http_p99_ms_1", "HTTP p99, 1 connection", "ms", None, "lower"),
    ("handle_rps_100", "handle req/s, 100 in flight", "req/s", "≥ 4×", "higher"),
    ("handle_p50_ms", "handle p50, sequential", "ms", "≤ 0.4×", "lower"),
    ("handle_p99_ms", "handle p99, sequential", "ms", None, "lower"),
    ("compose_rps_32", "2-deployment composition over HTTP, req/s at 32 conns", "req/s", None, "higher"),
    ("compose_p50_ms_32", "2-deployment composition over HTTP, p50 at 32 conns", "ms", None, "lower"),
    ("body_1mb_rps_8", "1 MB request body, req/s at 8 conns", "req/s", "≥ 10×", "higher"),
    ("body_1mb_p50_ms_8", "1 MB request body, p50 at 8 conns", "ms", None, "lower"),
    ("ws_rtt_p50_ms_1", "WebSocket frame round trip p50, 1 connection, sequential", "ms", None, "lower"),
    ("ws_rtt_p99_ms_1", "WebSocket frame round trip p99, 1 connection, sequential", "ms", None, "lower"),
    ("first_deploy_s", "first deploy (Ray up; controller, proxy, 1 replica)", "s", "≤ 0.3×", "lower"),
    ("redeploy_unchanged_s", "redeploy, unchanged code", "s", None, "lower"),
    ("redeploy_changed_s", "redeploy, changed code", "s", "≤ 0.4×", "lower"),
    ("scale_1_to_2_s", "scale 1→2", "s", "≤ 0.3×", "lower"),
    ("scale_1_to_4_s", "scale 1→4", "s", None, "lower"),
    ("delete_s", "delete", "s", "≤ 0.2×", "lower"),
    ("cold_start_s", "cold start from zero replicas (first request answered)", "s", None, "lower"),
    ("rss_controller_mb", "memory: controller RSS", "MB", None, "lower"),
    ("rss_proxy_mb", "memory: proxy RSS", "MB", None, "lower"),
    ("rss_replica_mb", "memory: one replica RSS", "MB", None, "lower"),
    ("array_compose_1mb_ms", "1 MB array, Sender → Receiver by handle, per call", "ms", "≤ 0.5×", "lower"),
    ("array_compose_10mb_ms", "10 MB array, Sender → Receiver by handle, per call", "ms", "≤ 0.5×", "lower"),
    ("array_compose_50mb_ms", "50 MB array, Sender → Receiver by handle, per call", "ms", "≤ 0.5×", "lower"),
    ("array_driver_10mb_ms", "10 MB array, driver → replica by handle", "ms", "≤ 0.5×", "lower"),
    ("array_driver_50mb_ms", "50 MB array, driver → replica by handle", "ms", "≤ 0.5×", "lower"),
    ("batched_rps_64", "@serve.batch model over HTTP, req/s at 64 conns", "req/s", "≥ 2×", "higher"),
    ("batched_p50_ms_64", "@serve.batch model over HTTP, p50 at 64 conns", "ms", None, "lower"),
    ("batched_p99_ms_64", "@serve.batch model over HTTP, p99 at 64 conns", "ms", None, "lower"),
    ("batched_mean_batch_64", "@serve.batch model, mean batch size at 64 conns (max 32)", "", None, "higher"),
    ("nodes_1_rps_100", "handle req/s, 100 in flight, 3 replicas on 1 node of 3", "req/s", None, "higher"),
    ("nodes_2_rps_100", "handle req/s, 100 in flight, 3 replicas on 2 nodes of 3", "req/s", None, "higher"),
    ("nodes_3_rps_100", "handle req/s, 100 in flight, 3 replicas on 3 nodes of 3", "req/s", None, "higher"),
    ("nodes_2_local_pct_8", "calls served on the driver's node, 8 in flight, replicas on 2 nodes", "%", None, ""),
    ("nodes_3_local_pct_8", "calls served on the driver's node, 8 in flight, replicas on 3 nodes", "%", None, ""),
    ("http_errors_total", "HTTP errors, all loads", "", None, "lower"),
]

LABELS = {"serve_nb": "serve_nb", "ray_serve": "Ray Serve"}


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure (and of every sweep cell) over the repetitions that produced it."""

    def median_of(values: list[Any]) -> float | None:
        numbers = [v for v in values if isinstance(v, (int, float))]
        return statistics.median(numbers) if numbers else None

    out: dict[str, Any] = {key: median_of([r.get(key) for r in runs]) for key, *_ in FIGURES}
    cells = {cell for r in runs for cell in r.get("sweep", {})}
    out["sweep"] = {
        cell: {m: median_of([r["sweep"][cell].get(m) for r in runs if cell in r.get("sweep", {})])
               for m in ("rps", "p50_ms", "p99_ms", "errors")}
        for cell in cells
    }
    return out


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×" if a / b < 10 else f"{a / b:.0f}×"


def sweep_cells(med: dict[str, Any]) -> list[tuple[int, int]]:
    cells = {tuple(int(x) for x in cell.split("x")) for m in med.values() for cell in m.get("sweep", {})}
    return sorted(cells)  # type: ignore[arg-type]


def markdown(med: dict[str, dict[str, Any]], systems: list[str], info: dict[str, Any]) -> str:
    both = sorted(systems) == ["ray_serve", "serve_nb"]
    order = ["serve_nb", "ray_serve"] if both else systems
    lines = [
        f"Machine: {info['cores']} cores, Python {info['python']}, Ray {info['ray']}, {info['platform']}. "
        f"HTTP load: {info['http_client']}. Medians of {info['reps']} repetition(s), each system in a fresh process, "
        "alternating.",
        "",
        "| figure | " + " | ".join(LABELS.get(s, s) for s in order) + (" | serve_nb / Ray Serve | target |" if both else " |"),
        "|---|" + "---:|" * len(order) + ("---:|---|" if both else ""),
    ]
    for key, label, unit, target, _ in FIGURES:
        if all(med[s].get(key) is None for s in order):
            continue  # a workload group left out by --only (or failed in every run)
        row = f"| {label}{f' ({unit})' if unit else ''} | " + " | ".join(fmt(med[s].get(key)) for s in order)
        if both:
            row += f" | {ratio(med['serve_nb'].get(key), med['ray_serve'].get(key))} | {target or ''}"
        lines.append(row + " |")
    lines += ceiling(med, both, "http_rps_32", info.get("baseline_rps_32"),
                     "Bare uvicorn + starlette in one process (the ceiling): {} req/s at 32 connections")
    lines += ceiling(med, both, "body_1mb_rps_8", info.get("baseline_body_1mb_rps_8"),
                     "Bare uvicorn + starlette echoing the 1 MB body: {} req/s at 8 connections")
    lines += latency_ceiling(med, both, "ws_rtt_p50_ms_1", info.get("baseline_ws_rtt_p50_ms_1"),
                             "Bare uvicorn + starlette echoing the WebSocket frame: {} ms round trip (p50)")
    cells = sweep_cells(med)
    if cells:
        lines += ["", "HTTP req/s by replicas × concurrent connections (trivial deployment):", "",
                  "| replicas | connections | " + " | ".join(LABELS.get(s, s) for s in order) + (" | ratio |" if both else " |"),
                  "|---:|---:|" + "---:|" * len(order) + ("---:|" if both else "")]
        for replicas, conns in cells:
            values = [med[s].get("sweep", {}).get(f"{replicas}x{conns}", {}).get("rps") for s in order]
            row = f"| {replicas} | {conns} | " + " | ".join(fmt(v) for v in values)
            lines.append(row + (f" | {ratio(values[0], values[1])} |" if both else " |"))
    return "\n".join(lines)


def ceiling(med: dict[str, dict[str, Any]], both: bool, key: str, baseline: float | None, says: str) -> list[str]:
    """A line under the table: figure ``key`` as a fraction of bare uvicorn's ``baseline`` (``says``
    describes the baseline, ``{}`` its value); nothing when either is missing."""
    ours = med.get("serve_nb", {}).get(key)
    if not baseline or not ours:
        return []
    theirs = med.get("ray_serve", {}).get(key) if both else None
    return ["", says.format(fmt(baseline)) + f"; serve_nb reaches {ours / baseline:.0%} of it"
            + (f", Ray Serve {theirs / baseline:.1%}." if theirs else ".")]


def latency_ceiling(med: dict[str, dict[str, Any]], both: bool, key: str, baseline: float | None,
                    says: str) -> list[str]:
    """A line under the table for a latency (lower is better): figure ``key`` against bare uvicorn's
    ``baseline``, as a multiple of it; nothing when either is missing."""
    ours = med.get("serve_nb", {}).get(key)
    if not baseline or not ours:
        return []
    theirs = med.get("ray_serve", {}).get(key) if both else None
    return ["", says.format(fmt(baseline)) + f"; serve_nb takes {ours / baseline:.1f}× as long"
            + (f", Ray Serve {theirs / baseline:.1f}×." if theirs else ".")]


def plot(med: dict[str, dict[str, Any]], path: Path) -> bool:
    """Throughput vs concurrency, one line per (system, replicas). False when matplotlib is missing or
    the sweep did not run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cells = sweep_cells(med)
    if not cells:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, style in (("serve_nb", "-o"), ("ray_serve", "--s")):
        if system not in med:
            continue
        for replicas in sorted({r for r, _ in cells}):
            points = [(c, med[system]["sweep"].get(f"{replicas}x{c}", {}).get("rps")) for r, c in cells if r == replicas]
            points = [(c, v) for c, v in points if v]
            if points:
                axes[0].plot(*zip(*points), style, label=f"{LABELS[system]}, {replicas} replica(s)")
        by_replicas = [(r, med[system]["sweep"].get(f"{r}x32", {}).get("rps")) for r in sorted({r for r, _ in cells})]
        by_replicas = [(r, v) for r, v in by_replicas if v]
        if by_replicas:
            axes[1].plot(*zip(*by_replicas), style, label=LABELS[system])
    axes[0].set(xscale="log", yscale="log", xlabel="concurrent connections", ylabel="req/s",
                title="HTTP throughput vs concurrency")
    axes[1].set(yscale="log", xlabel="replicas", ylabel="req/s", title="HTTP throughput vs replicas (32 connections)")
    axes[1].set_xticks(sorted({r for r, _ in cells}))
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def metrics_cost(med: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]]) -> str:
    """serve_nb with Ray Serve's metrics on (its column above) and off, same run: what recording them costs."""
    off = med.get("serve_nb_metrics_off")
    if not off:
        return ""
    lines = ["", "", "Metrics cost (serve_nb with metrics on, as above, and with SERVE_NB_METRICS=0; median [range]):", ""]
    for key, label in (("http_rps_32", "HTTP req/s at 32 connections"), ("handle_rps_100", "handle req/s, 100 in flight")):
        on_value, off_value = med.get("serve_nb", {}).get(key), off.get(key)
        if on_value is None or off_value is None:
            continue
        spread = {s: [r[key] for r in runs[s] if r.get(key) is not None] for s in ("serve_nb", "serve_nb_metrics_off")}
        shown = {s: f"{fmt(min(v))}–{fmt(max(v))}" if v else "–" for s, v in spread.items()}
        lines.append(f"- {label}: on {fmt(on_value)} [{shown['serve_nb']}], off {fmt(off_value)} "
                     f"[{shown['serve_nb_metrics_off']}]: {100 * (on_value / off_value - 1):+.1f}%")
    return "\n".join(lines)
