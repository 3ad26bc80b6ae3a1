"""Self-contained HTML reports: figures as inline SVG (matplotlib, the 'report' extra), tables
as HTML, no scripts, styles or fonts fetched from anywhere, so the page opens offline.

run_report(result): latency table, TTFT/TPOT CDFs, where TTFT went, queue, batch, KV use and
power over time, energy and cost. sweep_report(sweep): latency-vs-load curves, CDFs per point,
KV use, queue and power over time, cost and energy per configuration, and the table of points.
Each figure sits in a <figure class="plot" id=...> so tests (and people) can find it.
"""

from __future__ import annotations

import html
import io
import json
import math
from typing import Any

from ._version import __version__

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
figure.plot { margin: 1em 0; } figure.plot svg { max-width: 100%; height: auto; }
details pre { font-size: 0.75em; background: #f7f7f7; padding: 1em; overflow-x: auto; }
.note { color: #666; font-size: 0.85em; }
"""


def svg(fig: Any) -> str:
    """The figure as an inline <svg> element (text drawn as paths: no fonts needed; no date and
    fixed element ids, so the same run gives the same page)."""
    from matplotlib import rcParams

    buf = io.StringIO()
    with _rc(rcParams, {"svg.fonttype": "path", "svg.hashsalt": "tokenmill"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


class _rc:
    def __init__(self, params: Any, values: dict[str, Any]) -> None:
        self.params, self.values = params, values
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        self.saved = {k: self.params[k] for k in self.values}
        self.params.update(self.values)

    def __exit__(self, *exc: Any) -> None:
        self.params.update(self.saved)


def _figure(ident: str, caption: str, fig: Any) -> str:
    return (f'<figure class="plot" id="{ident}">{svg(fig)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _page(title: str, body: list[str], scenario: Any) -> str:
    resolved = html.escape(json.dumps(scenario, indent=2, default=str))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f'<p class="note">tokenmill {__version__}; the resolved scenario is at the end.</p>'
            + "\n".join(body)
            + f"<h2>Resolved scenario</h2><details><summary>show</summary><pre>{resolved}</pre>"
            "</details></body></html>\n")


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 0.1 else f"{v:,.{digits}f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if k < left else ""}">{html.escape(h)}</th>'
                   for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if k < left else ""}">{_num(c)}</td>'
                                    for k, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def run_report(r: Any) -> str:
    from . import plots

    d = r.to_dict()
    lat = d["latency_ms"]
    rows = [[name.upper(), *(lat[name][k] for k in ("mean", "p50", "p90", "p95", "p99", "max")),
             lat[name]["count"]] for name in ("ttft", "tpot", "itl", "e2e")]
    e, c = d["energy"], d["cost"]
    body = [
        f"<p>{html.escape(r.model_name)} on {html.escape(str(r.cluster.chips if r.cluster else 1))} "
        f"x {html.escape(r.gpu_name)}; {r.num_finished:,} of {r.num_arrived:,} arrived requests "
        f"finished, {r.num_unfinished:,} unfinished, {r.num_rejected:,} rejected; "
        f"{r.request_throughput:,.2f} req/s, {r.output_token_throughput:,.1f} output tok/s over "
        f"{r.duration_s:,.2f} s.</p>",
        "<h2>Latency (ms)</h2>",
        _table(["metric", "mean", "p50", "p90", "p95", "p99", "max", "count"], rows),
        "<h2>Energy and cost</h2>",
        _table(["energy kJ", "mean kW", "J / output token", "J / request", "USD", "USD / M output tokens",
                "USD / request"],
               [[e["energy_kj"], e["mean_power_kw"], e["joules_per_output_token"], e["joules_per_request"],
                 c["cost_usd"], c["usd_per_million_output_tokens"], c["usd_per_request"]]], left=0),
        "<h2>Latency distributions</h2>",
        _figure("cdf", "TTFT and TPOT cumulative distributions", plots.run_cdfs(r)),
        _figure("ttft-parts", "mean TTFT split into queueing, prefill, KV transfer and the rest",
                plots.run_ttft_parts(r)),
        "<h2>Over time</h2>",
        _figure("timeseries", "queue, running batch, KV use and power over time",
                plots.run_timeseries(r)),
    ]
    return _page(f"tokenmill run: {r.model_name} on {r.gpu_name}", body, d["scenario"])


SWEEP_COLUMNS = (("req/s", ("throughput", "requests_per_s")),
                 ("TTFT p50", ("latency_ms", "ttft", "p50")), ("TTFT p99", ("latency_ms", "ttft", "p99")),
                 ("TPOT p50", ("latency_ms", "tpot", "p50")), ("TPOT p99", ("latency_ms", "tpot", "p99")),
                 ("E2E p99", ("latency_ms", "e2e", "p99")),
                 ("kW", ("energy", "mean_power_kw")), ("J/tok", ("energy", "joules_per_output_token")),
                 ("USD/M tok", ("cost", "usd_per_million_output_tokens")))


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def sweep_report(s: Any, title: str = "tokenmill sweep") -> str:
    from . import plots

    params = list(s.parameters)
    rows = []
    for p in s.points:
        cells = [p.parameters.get(k) for k in params]
        if p.error:
            rows.append(cells + [f"error: {p.error.splitlines()[0]}"] + [None] * (len(SWEEP_COLUMNS) - 1))
        else:
            rows.append(cells + [_get(p.summary, path) for _, path in SWEEP_COLUMNS])
    ok = [p for p in s.points if p.error is None]
    body = [f"<p>{len(s.points)} points ({len(s.points) - len(ok)} could not run), swept over "
            f"{html.escape(', '.join(params))}.</p>",
            "<h2>Points</h2>", _table(params + [c[0] for c in SWEEP_COLUMNS], rows, left=len(params))]
    if ok:
        body += [
            "<h2>Latency vs load</h2>",
            _figure("latency-vs-load", "p50 and p99 latency and throughput against the load",
                    plots.sweep_curves(s)),
            "<h2>Latency distributions</h2>",
            _figure("cdf", "TTFT and TPOT CDFs of each point", plots.sweep_cdfs(s)),
            "<h2>Over time</h2>",
            _figure("timeseries", "queue, KV use and power over time, per point",
                    plots.sweep_timeseries(s)),
            "<h2>Cost and energy per configuration</h2>",
            _figure("cost-energy", "USD per million output tokens and joules per output token",
                    plots.sweep_costs(s)),
        ]
    scenario = ok[0].scenario if ok else {}
    return _page(title, body, {"first point": scenario, "parameters": params})
