"""The HTML pieces of the report: page frame and style, number formatting, correlation and
run tables, embedded figures, and the environment of the writing process."""

from __future__ import annotations

import base64
import html
import importlib.metadata
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from flatvol.analysis.figures import MadeFigure

MAX_RUN_ROWS = 500
ENV_PACKAGES = ("torch", "numpy", "scipy", "pandas", "matplotlib")


# --- environment ----------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict[str, str]:
    """Versions and machine of the process writing the report."""
    import flatvol

    env = {"flatvol": flatvol.__version__, "python": sys.version.split()[0]}
    for package in ENV_PACKAGES:
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = "not installed"
    env["platform"] = platform.platform()
    env["cpu"] = f"{cpu_name()} ({os.cpu_count()} logical cores)"
    return env


# --- HTML pieces --------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1250px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2em}.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.3em .55em;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#444;font-size:.9em;margin-top:.3em}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.8em;overflow-x:auto;font-size:.85em}
.good{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}
.neutral{color:#555;font-weight:600}
"""


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value))


def fmt(value: object, digits: int = 3) -> str:
    """A number for a table cell (a dash for None or non-finite), else the escaped value."""
    if value is None:
        return "&ndash;"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "&ndash;"
        value = round(float(value), digits) + 0.0  # no "-0.000"
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.4g}"
    return esc(value)


def ci_text(row: pd.Series, name: str) -> str:
    value, low, high = row[name], row[f"{name}_low"], row[f"{name}_high"]
    if not np.isfinite(value):
        return "&ndash;"
    value, low, high = (round(float(v), 3) + 0.0 for v in (value, low, high))
    if np.isfinite(low) and np.isfinite(high):
        return f"{value:.3f} <small>[{low:.3f}, {high:.3f}]</small>"
    return f"{value:.3f}"


def pvalue_text(p: float) -> str:
    return f"{p:.2g}" if np.isfinite(p) else "&ndash;"


def correlation_html(table: pd.DataFrame, group: str | None = None) -> str:
    """An HTML table of correlation_table(): estimates with their CIs, p-values and Psi."""
    psi_cols = [c for c in table.columns if c.startswith("psi_")]
    head = ([f'<th class="l">{esc(group)}</th>'] if group else [])
    head += ['<th class="l">measure</th>', "<th>n</th>", "<th>Kendall &tau; [CI]</th>",
             "<th>p (&tau;)</th>", "<th>Spearman &rho; [CI]</th>", "<th>Pearson r [CI]</th>",
             "<th>granulated Kendall &Psi;</th>"]
    head += [f"<th>&psi; {esc(c[4:])}</th>" for c in psi_cols]
    rows = []
    for _, r in table.iterrows():
        cells = [f'<td class="l">{esc(r[group])}</td>'] if group else []
        cells += [f'<td class="l">{esc(r["label"])}</td>', f"<td>{int(r['n'])}</td>",
                  f"<td>{ci_text(r, 'kendall')}</td>", f"<td>{pvalue_text(r['kendall_p'])}</td>",
                  f"<td>{ci_text(r, 'spearman')}</td>", f"<td>{ci_text(r, 'pearson')}</td>",
                  f"<td>{fmt(r['granulated_kendall'])}</td>"]
        cells += [f"<td>{fmt(r[c])}</td>" for c in psi_cols]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ('<table class="correlations"><thead><tr>' + "".join(head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def frame_html(frame: pd.DataFrame, max_rows: int = MAX_RUN_ROWS) -> str:
    shown = frame.head(max_rows)
    body = shown.to_html(index=False, border=0, float_format=lambda v: f"{v:.6g}", na_rep="")
    more = (f"<p class='meta'>First {max_rows} of {len(frame)} rows; the full table is in the "
            "CSV/Parquet export.</p>" if len(frame) > max_rows else "")
    return body + more


def figure_html(fig: MadeFigure, relative_to: Path | None = None) -> str:
    data = base64.b64encode(fig.files.png.read_bytes()).decode("ascii")
    png, pdf = fig.files.png, fig.files.pdf
    if relative_to is not None:
        png, pdf = (relative_path(p, relative_to) for p in (png, pdf))
    return (f'<figure id="{esc(fig.name)}"><img alt="{esc(fig.name)}" '
            f'src="data:image/png;base64,{data}">'
            f"<figcaption><b>{esc(fig.name)}</b>: {esc(fig.caption)} "
            f"(files: {esc(png)}, {esc(pdf)})</figcaption></figure>")


def relative_path(path: Path, base: Path) -> Path:
    try:
        return path.resolve().relative_to(base.resolve())
    except ValueError:
        return path


def page_html(title: str, sections: Sequence[str], source: str | None = None) -> str:
    """Wrap sections into the page, with the environment at the end."""
    header = (f"<h1>{esc(title)}</h1><p class='meta'>Generated "
              f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}"
              + (f" from {esc(source)}" if source else "") + "</p>")
    env_rows = "".join(f'<tr><th class="l">{esc(k)}</th><td class="l">{esc(v)}</td></tr>'
                       for k, v in environment().items())
    env = ("<h2>Environment</h2><p class='meta'>Of the process that wrote this report.</p>"
           f"<table class='environment'>{env_rows}</table>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join([header, *sections, env]) + "\n</body></html>\n")


def slug(text: str) -> str:
    """`text` as an HTML id / directory name: letters, digits, '-' and '_' only."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "spec"
