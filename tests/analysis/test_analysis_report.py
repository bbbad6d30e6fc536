"""The HTML report: written from a real results store, self-contained, every figure embedded,
the correlation table, the Fig-5 numbers, the spec and the environment; the CLI command."""

from __future__ import annotations

import base64
import re

import numpy as np
import typer
from analysis_helpers import MEASURES, make_runs, make_series, write_store
from typer.testing import CliRunner

from flatvol.analysis.correlations import correlation_table
from flatvol.analysis.export import read_table
from flatvol.analysis.report import load_results
from flatvol.cli.report import report_command
from flatvol.errors import DataError


def test_store_round_trip(report):
    out, _, _, runs = report
    results = load_results(out)
    assert sorted(results.runs.spec_hash.unique()) == ["abc123", "t5"]
    assert len(results.runs) == len(runs) + 1
    assert set(MEASURES) <= set(results.runs.columns)
    assert set(results.specs.name) == {"synthetic", "fig5_temporal"}
    # one section and one figures/ folder per spec
    page = report[2]
    assert "<h2 id='synthetic'>Spec synthetic" in page
    assert "<h2 id='fig5_temporal'>Spec fig5_temporal" in page
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["fig5_temporal-t5",
                                                                  "synthetic-abc123"]


def test_every_figure_is_embedded(report):
    out, _, page, _ = report
    pngs = sorted((out / "figures").rglob("*.png"))
    pdfs = sorted((out / "figures").rglob("*.pdf"))
    names = sorted(p.stem for p in pngs)
    assert names == ["fig3_all_measures", "fig3_scatter", "fig4_optimizers", "fig5_temporal"]
    assert len(pdfs) == len(pngs)
    uris = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert sorted(name for name, _ in uris) == names
    embedded = {name: base64.b64decode(data) for name, data in uris}
    for png in pngs:
        assert embedded[png.stem] == png.read_bytes()


def test_correlation_table_and_headline(report):
    out, _, page, runs = report
    table = correlation_table(load_results(out).runs.query("spec_hash == 'abc123'"),
                              n_resamples=100)
    vol = table.set_index("measure").loc["log10_volume"]
    assert "class=\"correlations\"" in page
    for label in table["label"]:
        assert f">{label}<" in page
    # the headline quotes the volume tau with its bootstrap interval
    assert (f"Kendall &tau;(log10 V(f), test_acc_E) = {vol.kendall:.3f} <small>"
            f"[{vol.kendall_low:.3f}, {vol.kendall_high:.3f}]</small> over {vol.n} runs") in page
    assert "Volume correlation at least 0.6" in page
    assert "1 failed run(s)" in page and "RuntimeError: synthetic failure" in page


def test_fig5_numbers_spec_and_environment(report):
    _, _, page, _ = report
    temporal = page[page.index("class='temporal'"):]
    assert "<td>1000.0</td>" in temporal  # make_series: sharpness jumps by 10**3 at alpha
    assert "<td>5.90</td>" in temporal
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped</b>" not in page
    assert "specs/synthetic.toml" in page
    assert "[sweep]\nattack_sizes = [0, 100]" in page  # the spec as written, for the sweep
    assert '&quot;alpha_events&quot;: [' in page  # its JSON, for the spec without source text
    for key in ("flatvol", "python", "torch", "numpy", "platform", "cpu"):
        assert f'<th class="l">{key}</th>' in page


def test_page_is_self_contained(report):
    _, _, page, _ = report
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"(src|href)=[\"'](?!data:)", page)
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page


def test_cli_report_with_exports(tmp_path, monkeypatch):
    runs = make_runs(optimizers=("sgd",), attack_sizes=range(0, 201, 100), seeds=range(2))
    write_store(tmp_path, runs, make_series())
    # Figures are tested above; here only the command's outputs matter.
    monkeypatch.setattr("flatvol.analysis.report.make_figures", lambda *a, **k: [])
    app = typer.Typer()
    app.command()(report_command)
    result = CliRunner().invoke(app, [str(tmp_path), "--csv", "--parquet", "--resamples", "50"])
    assert result.exit_code == 0, result.output
    written = result.stdout.split()
    assert written[0] == str(tmp_path / "report.html")
    for name in ("runs", "series", "correlations"):
        assert str(tmp_path / f"{name}.csv") in written
        assert str(tmp_path / f"{name}.parquet") in written
    corr = read_table(tmp_path / "correlations.parquet")
    assert set(corr.spec_name) == {"synthetic"}  # the single Fig-5 run has no correlations
    back = read_table(tmp_path / "runs.csv")
    assert len(back) == len(runs) + 1
    np.testing.assert_allclose(np.sort(back.log10_volume.dropna()),
                               np.sort(load_results(tmp_path).runs.log10_volume.dropna()))


def test_cli_errors(tmp_path):
    app = typer.Typer()
    app.command()(report_command)
    result = CliRunner().invoke(app, [str(tmp_path / "missing")])
    assert isinstance(result.exception, DataError)
    assert "no such results directory" in str(result.exception)
    result = CliRunner().invoke(app, [str(tmp_path)])
    assert isinstance(result.exception, DataError)
    assert "no results store results.sqlite" in str(result.exception)
    assert "\n" not in str(result.exception)
