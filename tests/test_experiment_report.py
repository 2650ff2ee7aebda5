"""The experiment report: HTML opened in headless Chromium (plots decode and render, tables present),
Markdown summary and TREC runs."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unirank.eval import read_trec_run
from unirank.eval.experiment import run_experiment

pytest.importorskip("matplotlib")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PROBE = (
    '<script>window.addEventListener("load", () => { document.body.setAttribute("data-probe", JSON.stringify('
    "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]))); });</script>"
)
METRICS = ["nDCG@10", "RR@10", "R@100"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cfg = {
        "name": "report-test",
        "datasets": [{"name": "dl19", "source": "trec-dl-2019", "max_queries": 6}],
        "rerankers": ["bm25", {"name": "cascade", "spec": "bm25 >> bm25:bm25+@5"}],
        "depths": [5, 10],
        "metrics": METRICS,
        "significance": {"resamples": 200},
    }
    return run_experiment(cfg, out_dir=out), out


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self.probe: str | None = None
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "body" and "data-probe" in a:
            self.probe = a["data-probe"]
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        for buf in (self._cell, self._heading):
            if buf is not None:
                buf.append(data)


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed at /usr/bin/chromium (CI: apt-get install -y chromium)",
)
def test_html_report_renders_in_headless_chromium(report, tmp_path):
    import matplotlib.image as mpimg

    _, out = report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page  # self-contained
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        proc = subprocess.run(
            [
                str(CHROMIUM),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)

    # plots: three per (dataset, first stage), each a data: PNG that decodes and that the browser rendered
    assert len(dom.imgs) == 3
    rendered = json.loads(dom.probe)
    assert len(rendered) == 3
    for img, (complete, width, height) in zip(dom.imgs, rendered):
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(io.BytesIO(png), format="png")
        assert complete and (width, height) == (pixels.shape[1], pixels.shape[0]) and width > 100
        assert pixels[..., :3].std() > 0.05  # not a blank image
    assert sorted(img["alt"].split(" dl19")[0] for img in dom.imgs) == ["depth sweep", "lexical", "wtl"]

    # tables: main, win/tie/loss, lexical buckets, significance
    assert len(dom.tables) == 4
    main, wtl, lexical, sig = dom.tables
    assert main[0][: 1 + len(METRICS)] == ["system", *METRICS]
    assert [row[0] for row in main[1:]] == ["bm25", "bm25@5", "bm25@10", "cascade@5", "cascade@10"]
    assert wtl[0] == ["system", "baseline", "wins", "ties", "losses"]
    assert all(int(r[2]) + int(r[3]) + int(r[4]) == 6 for r in wtl[1:])
    assert sum(int(r[1]) for r in lexical[1:]) == 6
    # one row per (system, metric): Δ, 95 % CI, +, −, then p and corrected p per test, then the mark
    assert len(sig) == 1 + 4 * len(METRICS)
    assert sig[0][:7] == ["system", "baseline", "metric", "Δ", "95% CI", "+", "−"] and len(sig[0]) == 8 + 6
    assert main[0][1 + len(METRICS) : 4 + len(METRICS)] == ["Δ nDCG@10 (95% CI)", "+ nDCG@10", "− nDCG@10"]
    assert {"Depth sweep", "Win / tie / loss", "Lexical overlap", "Significance"} <= set(dom.headings)


def test_markdown_summary_and_trec_runs(report):
    res, out = report
    md = (out / "summary.md").read_text()
    assert md.startswith("# Experiment: report-test")
    assert "| system | nDCG@10 | RR@10 | R@100 |" in md
    assert "depth sweep cascade: best nDCG@10" in md
    (group,) = res.groups
    for unit in group.units:
        path = out / "runs" / "dl19" / "bm25" / f"{unit.label}.trec"
        assert read_trec_run(path) == unit.run
    data = json.loads((out / "results.json").read_text())
    assert data["computed"] == res.computed


def test_plots_use_their_own_agg_canvas_without_touching_pyplot_backend():
    import sys

    import matplotlib

    from unirank.eval.report import plot_png

    backend = matplotlib.get_backend() if "matplotlib.pyplot" in sys.modules else None
    png = plot_png(lambda ax: ax.bar([1, 2], [3, 4]))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    if backend is not None:
        assert matplotlib.get_backend() == backend
