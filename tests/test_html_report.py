"""HTML reports: self-contained pages whose figures render in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

pytest.importorskip("matplotlib", reason="the HTML report needs the 'report' extra (matplotlib)")

import tokenmill as tm  # noqa: E402
from tokenmill.cli import main  # noqa: E402
from tokenmill.html_report import run_report, sweep_report  # noqa: E402

RUN_FIGURES = ("cdf", "ttft-parts", "timeseries")
SWEEP_FIGURES = ("latency-vs-load", "cdf", "timeseries", "cost-energy")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _figures(page: str) -> list[str]:
    return re.findall(r'<figure class="plot" id="([a-z-]+)"><svg', page)


def _self_contained(page: str) -> None:
    """Nothing to fetch: no scripts, no stylesheets or images by address (XML namespace URIs in
    the SVG are names, never fetched)."""
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", page)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page)


def test_run_report_has_its_figures() -> None:
    r = tm.simulate(tm.Scenario(workload=tm.Workload(num_requests=300, arrival_rate=20.0)))
    page = run_report(r)
    assert _figures(page) == list(RUN_FIGURES)
    _self_contained(page)
    assert tm.__version__ in page and "Resolved scenario" in page
    assert run_report(r) == page  # reproducible: no dates, fixed ids
    figs = r.plot()
    assert len(figs) == 3 and r.plot("cdf").axes


def test_sweep_report_has_its_figures() -> None:
    s = tm.sweep(tm.Scenario(workload=tm.Workload(num_requests=150)),
                 {"workload.arrival_rate": [5.0, 20.0], "plan.tp": [1, 2]}, jobs=1)
    page = sweep_report(s)
    assert _figures(page) == list(SWEEP_FIGURES)
    _self_contained(page)


def test_plot_kind_is_checked() -> None:
    r = tm.simulate(tm.Scenario(workload=tm.Workload(num_requests=20, arrival_rate=20.0)))
    with pytest.raises(tm.ConfigError, match="valid: overview"):
        r.plot("pie")


def _render(path, tmp_path) -> str:
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; "
                    ".ci/run installs it)")
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,2400", path.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 20_000  # a page with figures, not a blank one
    return dom


def test_run_html_renders_in_headless_chromium(tmp_path) -> None:
    page = tmp_path / "run.html"
    assert main(["run", "--num-requests", "300", "--arrival-rate", "20", "--html", str(page)]) == 0
    dom = _render(page, tmp_path)
    assert _figures(dom) == list(RUN_FIGURES)
    assert dom.count("<svg") >= len(RUN_FIGURES)


def test_sweep_html_renders_in_headless_chromium(tmp_path, capsys) -> None:
    page = tmp_path / "sweep.html"
    assert main(["sweep", "--arrival-rate", "5,20", "--num-requests", "150", "--jobs", "1",
                 "--html", str(page)]) == 0
    dom = _render(page, tmp_path)
    assert _figures(dom) == list(SWEEP_FIGURES)
