"""Figures of a run or a sweep, drawn with matplotlib (the optional 'report' extra).

Figures are made with matplotlib.figure.Figure directly (no pyplot, no global backend), so
they work headless and in notebooks alike. Each function returns a Figure.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .errors import ConfigError

MAX_OVERLAYS = 12  # curves drawn on one sweep figure before it stops being readable


def _figure(rows: int = 1, cols: int = 1, width: float = 10.0, height: float = 3.6) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plots and HTML reports need matplotlib: pip install "
                          "'tokenmill[report]'") from None
    fig = Figure(figsize=(width, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _cdf(ax: Any, values: np.ndarray, label: Optional[str] = None) -> None:
    v = np.sort(values[np.isfinite(values)])
    if v.size:
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label, lw=1.4)


def run_cdfs(r: Any) -> Any:
    rec = r.requests
    fig, axes = _figure(1, 2)
    done = rec.finished
    _cdf(axes[0, 0], rec.ttft_s[done] * 1e3)
    _cdf(axes[0, 1], rec.tpot_s[done & (rec.output_tokens > 1)] * 1e3)
    for ax, name in zip(axes[0], ("TTFT", "TPOT")):
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("share of finished requests")
        ax.set_title(f"{name} CDF")
        ax.grid(alpha=0.3)
    return fig


def run_timeseries(r: Any) -> Any:
    ts = r.timeseries
    fig, axes = _figure(3, 1, height=2.4)
    if ts is None:
        axes[0, 0].set_title("no time series (--timeseries-resolution 0)")
        return fig
    t = ts.start_s + ts.length_s / 2
    ax = axes[0, 0]
    ax.plot(t, ts.queue.sum(axis=1), label="waiting (queue)")
    ax.plot(t, ts.running.sum(axis=1), label="running batch")
    ax.set_ylabel("requests")
    ax.set_title(f"queue and running batch, all replicas (bucket {ts.dt_s:g} s)")
    ax.legend(loc="upper right")
    ax = axes[1, 0]
    for k in range(min(ts.replicas, MAX_OVERLAYS)):
        ax.plot(t, 100 * ts.kv_utilization[:, k], label=f"replica {k}", lw=1.0)
    ax.set_ylabel("KV cache in use (%)")
    ax.set_title("KV use per replica")
    ax = axes[2, 0]
    ax.plot(t, ts.power_w.sum(axis=1) / 1e3, color="tab:red")
    ax.set_ylabel("power (kW)")
    ax.set_xlabel("time (s)")
    ax.set_title("power of every chip (idle ones included)")
    for row in axes:
        row[0].grid(alpha=0.3)
    return fig


def run_ttft_parts(r: Any) -> Any:
    fig, axes = _figure(1, 1, width=7.0, height=2.6)
    ax = axes[0, 0]
    parts = r.ttft_breakdown_ms
    names = [k for k in ("queue", "prefill", "recompute", "kv_transfer", "other") if k in parts]
    ax.barh(names, [max(parts[k], 0.0) for k in names], color="tab:blue")
    ax.set_xlabel("mean ms of TTFT")
    ax.set_title("where TTFT went (finished requests)")
    ax.invert_yaxis()
    return fig


def plot_result(r: Any, kind: str = "overview", ax: Any = None) -> Any:
    makers = {"cdf": run_cdfs, "timeseries": run_timeseries, "ttft": run_ttft_parts}
    if kind == "overview":
        return [makers[k](r) for k in ("cdf", "timeseries", "ttft")]
    if kind not in makers:
        raise ConfigError(f"plot kind {kind!r} unknown; valid: overview, {', '.join(makers)}")
    return makers[kind](r)


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------

def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def load_axis(s: Any) -> Optional[str]:
    """The parameter to put on the x axis: an arrival-rate-like one, else the first numeric."""
    good = [p for p in s.points if p.error is None]
    candidates = [n for n in s.parameters if _numeric([p.parameters.get(n) for p in good])]
    for n in candidates:
        if "rate" in n or "concurrency" in n:
            return n
    return candidates[0] if candidates else None


def _series(s: Any, x: str) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for p in s.points:
        if p.error is None:
            key = ", ".join(f"{k}={v}" for k, v in p.parameters.items() if k != x) or "all"
            groups.setdefault(key, []).append(p)
    return groups


def sweep_curves(s: Any) -> Any:
    x = load_axis(s)
    fig, axes = _figure(2, 2, height=3.2)
    if x is None:
        axes[0, 0].set_title("no numeric parameter to plot against")
        return fig
    panels = ((axes[0, 0], "ttft", "TTFT (ms)"), (axes[0, 1], "tpot", "TPOT (ms)"),
              (axes[1, 0], "e2e", "end-to-end (ms)"))
    groups = _series(s, x)
    for name, pts in list(groups.items())[:MAX_OVERLAYS]:
        pts = sorted(pts, key=lambda p: p.parameters[x])
        xs = [p.parameters[x] for p in pts]
        for ax, metric, label in panels:
            line, = ax.plot(xs, [p.summary["latency_ms"][metric]["p50"] for p in pts], "o-",
                            label=f"{name} p50", lw=1.4)
            ax.plot(xs, [p.summary["latency_ms"][metric]["p99"] for p in pts], "s--",
                    color=line.get_color(), label=f"{name} p99", lw=1.0)
            ax.set_ylabel(label)
        axes[1, 1].plot(xs, [p.summary["throughput"]["requests_per_s"] for p in pts], "o-",
                        label=name)
    axes[1, 1].plot([], [])
    axes[1, 1].set_ylabel("finished req/s")
    for ax in axes.flat:
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title("latency vs load (p50 solid, p99 dashed)")
    axes[1, 1].set_title("throughput vs load")
    axes[0, 1].legend(fontsize=7, loc="upper left")
    return fig


def _label(p: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.parameters.items())


def sweep_cdfs(s: Any) -> Any:
    fig, axes = _figure(1, 2)
    for p in [p for p in s.points if p.error is None][:MAX_OVERLAYS]:
        for ax, key in zip(axes[0], ("ttft_ms", "tpot_ms")):
            q = p.cdf.get(key) or []
            if q:
                ax.plot(q, np.linspace(0.0, 1.0, len(q)), label=_label(p), lw=1.2)
    for ax, name in zip(axes[0], ("TTFT", "TPOT")):
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("share of finished requests")
        ax.set_title(f"{name} CDF per point")
        ax.grid(alpha=0.3)
    axes[0, 1].legend(fontsize=7, loc="lower right")
    return fig


def sweep_timeseries(s: Any) -> Any:
    fig, axes = _figure(3, 1, height=2.4)
    panels = (("queue", "waiting requests"), ("kv_utilization", "KV in use (share)"),
              ("power_kw", "power (kW)"))
    for p in [p for p in s.points if p.error is None][:MAX_OVERLAYS]:
        if not p.series:
            continue
        for row, (key, _) in zip(axes, panels):
            row[0].plot(p.series["t_s"], p.series[key], label=_label(p), lw=1.0)
    for row, (_, label) in zip(axes, panels):
        row[0].set_ylabel(label)
        row[0].grid(alpha=0.3)
    axes[0, 0].set_title("queue, KV use and power over time, per point")
    axes[2, 0].set_xlabel("time (s)")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    return fig


def sweep_costs(s: Any) -> Any:
    pts = [p for p in s.points if p.error is None]
    fig, axes = _figure(1, 2, height=max(2.6, 0.28 * len(pts) + 1.2))
    labels = [_label(p) for p in pts]
    cost = [p.summary["cost"]["usd_per_million_output_tokens"] for p in pts]
    energy = [p.summary["energy"]["joules_per_output_token"] for p in pts]
    axes[0, 0].barh(labels, [c if c is not None else 0.0 for c in cost], color="tab:green")
    axes[0, 0].set_xlabel("USD per million output tokens")
    axes[0, 1].barh(labels, [e if e is not None else 0.0 for e in energy], color="tab:orange")
    axes[0, 1].set_xlabel("joules per output token")
    axes[0, 1].set_yticks([])
    for ax in axes[0]:
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    axes[0, 0].set_title("cost per configuration")
    axes[0, 1].set_title("energy per configuration")
    axes[0, 0].tick_params(axis="y", labelsize=7)
    return fig
