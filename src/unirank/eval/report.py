"""Experiment reports: a self-contained HTML page (tables, matplotlib plots embedded as base64 PNGs), a
Markdown summary, ``results.json`` and every system's TREC run.

Figures are drawn on their own Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): no pyplot,
no global backend switch, safe in threads and notebooks.

>>> png = plot_png(lambda ax: ax.plot([1, 2], [3, 4]))
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import require
from ._files import atomic_write
from .io import write_trec_run

if TYPE_CHECKING:
    from ._experiment_run import ExperimentResult, Group

__all__ = ["plot_png", "write_report"]

_MARKS = {"t": "†", "randomization": "‡", "bootstrap": "§"}
_TEST_NAMES = {
    "t": "paired t-test",
    "randomization": "paired randomisation test",
    "bootstrap": "paired bootstrap test",
}
_CORRECTIONS = {"holm": "Holm-Bonferroni", "bh": "Benjamini-Hochberg", "none": "no"}
_ARROWS = {"better": "▲", "worse": "▼"}
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}img{max-width:100%}
.note{color:#666;font-size:13px}"""


def plot_png(draw: Callable[[Any], Any], size: tuple[float, float] = (6.4, 3.6)) -> bytes:
    """PNG bytes of a figure drawn by ``draw(ax)`` on its own Agg canvas."""
    require("matplotlib", "experiment")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig.add_subplot(1, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[Any]], md: bool = False) -> str:
    cells = [[c if isinstance(c, str) else _num(c) for c in row] for row in rows]
    if md:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(c)}</td>' if i else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in cells
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _mark(c: dict[str, Any]) -> str:
    """``▲†‡`` (better, significant by the t and randomisation tests), ``▼§``..., or ``""``."""
    if not c["direction"]:
        return ""
    return _ARROWS[c["direction"]] + "".join(_MARKS[t] for t in c["significant_by"])


def _marks(a: dict[str, Any], system: str, metric: str) -> str:
    return "".join(_mark(c) for c in a["comparisons"] if c["system"] == system and c["metric"] == metric)


def _signed(v: float) -> str:
    return f"{v:+.4f}"


def _ci(c: dict[str, Any]) -> str:
    return f"[{_signed(c['ci_low'])}, {_signed(c['ci_high'])}]"


def legend(cfg: Any) -> str:
    """What the marks, intervals and +/- columns mean (the report's and summary's first paragraph)."""
    tests = ", ".join(f"{_MARKS[t]} {_TEST_NAMES[t]}" for t in cfg.tests)
    base = "the first stage" if cfg.baseline == "first-stage" else cfg.baseline
    return (
        f"▲ / ▼: significantly better / worse than the baseline ({base}) at alpha={cfg.alpha} after "
        f"{_CORRECTIONS.get(cfg.correction, cfg.correction)} correction (over the systems of a group, per "
        f"metric and test), by: {tests}. Δ: mean difference to the baseline with its 95 % paired bootstrap "
        f"confidence interval ({cfg.resamples} resamples of the queries, seed {cfg.seed}). + / −: queries "
        f"improved / degraded (difference beyond {cfg.tie_threshold:g})."
    )


def _main_rows(g: Group, metrics: list[str]) -> list[list[Any]]:
    a = g.analysis
    main = {c["system"]: c for c in a["comparisons"] if c["metric"] == a["main_metric"]}
    rows = []
    for row in a["table"]:
        vals = [_num(row["metrics"][m]) + _marks(a, row["system"], m) for m in metrics]
        c = main.get(row["system"])
        rows.append(
            [
                row["system"],
                *vals,
                f"{_signed(c['mean_diff'])} {_ci(c)}" if c else "-",
                str(c["improved"]) if c else "-",
                str(c["degraded"]) if c else "-",
                _num(row["latency_ms_median"], 1),
                _num(row["latency_ms_p95"], 1),
                _num(row["candidates_mean"], 1),
                _num(row["scored_mean"], 1),
            ]
        )
    return rows


def _sig_table(g: Group, tests: list[str]) -> tuple[list[str], list[list[Any]]]:
    """One row per (system, metric): Δ, its CI, +/-, each test's p and corrected p, and the mark."""
    header = ["system", "baseline", "metric", "Δ", "95% CI", "+", "−"]
    for t in tests:
        header += [f"p {_MARKS[t]} {t}", f"p {_MARKS[t]} adjusted"]
    rows = []
    for c in g.analysis["comparisons"]:
        ps = [x for t in tests for x in (_num(c["p"][t]), _num(c["p_adjusted"][t]))]
        row = [c["system"], c["baseline"], c["metric"], _signed(c["mean_diff"]), _ci(c)]
        rows.append([*row, str(c["improved"]), str(c["degraded"]), *ps, _mark(c) or "not significant"])
    return [*header, "result"], rows


def _lex_rows(g: Group) -> tuple[list[str], list[list[Any]]]:
    labels = [u.label for u in g.units]
    rows = [[b["label"], str(b["n"]), *[b["means"][lab] for lab in labels]] for b in g.analysis["lexical"]]
    return ["BM25 separation", "queries", *labels], rows


def _plot_depth(g: Group) -> bytes:
    a = g.analysis

    def draw(ax: Any) -> None:
        for name, pts in a["depth_sweep"].items():
            ax.plot([p["depth"] for p in pts], [p["value"] for p in pts], marker="o", label=name)
        ax.axhline(
            a["first_stage_value"], color="gray", linestyle="--", label=f"{g.first_stage} (first stage)"
        )
        ticks = sorted({p["depth"] for pts in a["depth_sweep"].values() for p in pts})
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("candidates re-ranked (depth)")
        ax.set_ylabel(a["main_metric"])
        ax.set_title(f"Depth sweep: {g.dataset.name} / {g.first_stage}")
        ax.legend(fontsize=8)

    return plot_png(draw)


def _plot_lexical(g: Group) -> bytes:
    a = g.analysis
    labels = [
        u.label
        for u in g.units
        if u.reranker is None or u.depth == max((v.depth or 0) for v in g.units if v.reranker == u.reranker)
    ]

    def draw(ax: Any) -> None:
        buckets = a["lexical"]
        width = 0.8 / max(1, len(labels))
        for i, lab in enumerate(labels):
            xs = [j + i * width for j in range(len(buckets))]
            ax.bar(xs, [b["means"][lab] for b in buckets], width, label=lab)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(buckets))])
        ax.set_xticklabels([f"{b['label']}\n(n={b['n']})" for b in buckets], fontsize=8)
        ax.set_xlabel("BM25 separation of relevant documents (low = lexically fooled)")
        ax.set_ylabel(a["main_metric"])
        ax.set_title(f"Lexical overlap: {g.dataset.name} / {g.first_stage}")
        ax.legend(fontsize=8)

    return plot_png(draw)


def _plot_wtl(g: Group) -> bytes:
    rows = g.analysis["wtl"]

    def draw(ax: Any) -> None:
        ys = list(range(len(rows)))
        wins = [r["wins"] for r in rows]
        ties = [r["ties"] for r in rows]
        losses = [r["losses"] for r in rows]
        ax.barh(ys, wins, color="#2a9d8f", label="win")
        ax.barh(ys, ties, left=wins, color="#cccccc", label="tie")
        ax.barh(ys, losses, left=[w + t for w, t in zip(wins, ties)], color="#e76f51", label="loss")
        ax.set_yticks(ys)
        ax.set_yticklabels([r["system"] for r in rows], fontsize=8)
        ax.set_xlabel(f"queries ({g.analysis['main_metric']} vs baseline)")
        ax.set_title(f"Win / tie / loss: {g.dataset.name} / {g.first_stage}", pad=18)
        ax.legend(fontsize=8, ncol=3, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)

    return plot_png(draw, (6.4, 0.8 + 0.35 * max(1, len(rows))))


def _write_runs(result: ExperimentResult) -> list[Path]:
    paths = []
    for g in result.groups:
        folder = result.out_dir / "runs" / _safe(g.dataset.name) / _safe(g.first_stage)
        for u in g.units:
            path = folder / f"{_safe(u.label)}.trec"
            write_trec_run(u.run, path, tag=_safe(u.label))
            paths.append(path)
    return paths


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("_") or "x"


def write_report(result: ExperimentResult) -> tuple[Path, Path]:
    """Write ``report.html``, ``summary.md``, ``results.json`` and ``runs/`` under ``result.out_dir``."""
    cfg = result.config
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _write_runs(result)
    metrics = cfg.metrics
    main = cfg.main_metric
    header = [
        "system",
        *metrics,
        f"Δ {main} (95% CI)",
        f"+ {main}",
        f"− {main}",
        "latency ms (median)",
        "latency ms (p95)",
        "candidates",
        "docs scored",
    ]
    note = legend(cfg)
    h = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(cfg.name)}</title>"
        f"<style>{_CSS}</style></head><body><h1>Experiment: {html.escape(cfg.name)}</h1>",
        f"<p class='note'>{html.escape(note)} {len(result.computed)} units computed, "
        f"{len(result.reused)} reused from cache.</p>",
    ]
    md = [f"# Experiment: {cfg.name}", "", note, ""]
    for g in result.groups:
        title = f"{g.dataset.name} / {g.first_stage} ({len(g.dataset.qrels)} queries)"
        lines = g.header().splitlines()  # judged / skipped queries and the relevance level used
        lex_header, lex_rows = _lex_rows(g)
        wtl_rows = [
            [r["system"], r["baseline"], str(r["wins"]), str(r["ties"]), str(r["losses"])]
            for r in g.analysis["wtl"]
        ]
        wtl_header = ["system", "baseline", "wins", "ties", "losses"]
        sig_header, sig_rows = _sig_table(g, cfg.tests)
        h += [
            f"<h2>{html.escape(title)}</h2>",
            "<p class='note header'>" + "<br>".join(html.escape(x) for x in lines) + "</p>",
            _table(header, _main_rows(g, metrics)),
            "<h3>Depth sweep</h3>",
            _img(_plot_depth(g), f"depth sweep {title}"),
            "<h3>Win / tie / loss</h3>",
            _table(wtl_header, wtl_rows),
            _img(_plot_wtl(g), f"wtl {title}"),
            "<h3>Lexical overlap</h3>",
            "<p class='note'>Queries in equal-size buckets by BM25 separation: (best relevant - best "
            "non-relevant candidate) / best, BM25 over the candidates and relevant documents.</p>",
            _table(lex_header, lex_rows),
            _img(_plot_lexical(g), f"lexical {title}") if lex_rows else "<p>(not available)</p>",
            "<h3>Significance</h3>",
            _table(sig_header, sig_rows),
        ]
        md += [
            f"## {title}",
            "",
            *(f"{x}  " for x in lines),
            "",
            _table(header, _main_rows(g, metrics), md=True),
            "",
            "Win / tie / loss on " + g.analysis["main_metric"],
            "",
            _table(wtl_header, wtl_rows, md=True),
            "",
            "Lexical overlap (" + g.analysis["main_metric"] + " per BM25-separation bucket)",
            "",
            _table(lex_header, lex_rows, md=True),
            "",
            "Significance (vs the baseline; marks as in the legend above)",
            "",
            _table(sig_header, sig_rows, md=True),
            "",
        ]
        for name, pts in g.analysis["depth_sweep"].items():
            best = max(pts, key=lambda p: p["value"])
            md.append(
                f"- depth sweep {name}: best {g.analysis['main_metric']} {best['value']:.4f} at depth "
                f"{best['depth']} (" + ", ".join(f"{p['depth']}: {p['value']:.4f}" for p in pts) + ")"
            )
        md.append("")
    h.append("</body></html>")
    html_path, md_path = out / "report.html", out / "summary.md"
    with atomic_write(html_path) as fh:
        fh.write("\n".join(h))
    with atomic_write(md_path) as fh:
        fh.write("\n".join(md) + "\n")
    payload = {
        "name": cfg.name,
        "computed": result.computed,
        "reused": result.reused,
        "groups": [
            {
                "dataset": g.dataset.name,
                "first_stage": g.first_stage,
                "rel_level": g.rel_level,
                "judged_queries": len(g.dataset.qrels),
                "means_over_queries": g.evals[g.units[0].label].num_queries,
                "skipped_queries": list(g.skipped_queries),
                "notes": list(g.notes),
                "analysis": {k: v for k, v in g.analysis.items()},
                "per_query": {label: ev.per_query for label, ev in g.evals.items()},
                "latency_s": {u.label: u.latency for u in g.units},
            }
            for g in result.groups
        ],
    }
    with atomic_write(out / "results.json") as fh:
        json.dump(payload, fh, indent=1, default=_json_default)
    result.report_html, result.report_md = html_path, md_path
    return html_path, md_path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
