"""User-supplied text in figures is drawn literally: optimizer labels, column names, titles and
legend entries with `$`, `%`, `_`, `{` or `\\` neither raise in matplotlib's mathtext nor turn
into math (nor vanish from a legend); our own math labels stay math."""

from __future__ import annotations

import html
import io
import math

import pytest
from analysis_helpers import make_runs, make_series, write_store
from matplotlib import cbook
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text

from flatvol.analysis.figures import fig4_optimizers, fig5_temporal, scatter_figure
from flatvol.analysis.report import ReportSettings, write_report
from flatvol.analysis.temporal import temporal_runs
from flatvol.sgd_vs_bayes.analysis import OptimizerSummary, p_opt_vs_v_figure
from flatvol.sgd_vs_bayes.grid_analysis import GRID_COLUMNS, grid_figure

TEX_TYPO = r"sgd $\eta_{0.02$"  # the label: an unbalanced brace inside $...$
# Even dollars would silently become math; a lone backslash before `$` must not escape it.
# A leading "_" hides an artist from matplotlib's automatic legend.
NASTY = (TEX_TYPO, "50%", "a_b", "{", "\\", "$x$", "b\\$", "_lead")


def drawn_lines(fig: Figure | Legend) -> list[str]:
    """Every line of plain (non-math) text the figure or legend draws, as it appears.

    Matplotlib lays a Text out line by line; a line without an even number of unescaped `$`
    is drawn as it is, with `\\$` shown as `$` (matplotlib.text.Text's documented escaping)."""
    out = []
    for text in fig.findobj(Text):
        for line in text.get_text().split("\n"):
            if not cbook.is_math_text(line):
                out.append(line.replace(r"\$", "$"))
    return out


def render(fig: Figure) -> None:
    """Draw the figure as savefig does (raises where mathtext cannot parse a label)."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def nasty_runs():
    return make_runs(optimizers=NASTY, attack_sizes=range(0, 201, 100), seeds=range(2))


def test_fig3_and_fig4_draw_optimizer_labels_literally():
    runs = nasty_runs()
    scatter = scatter_figure(runs, ["log10_volume", "log10_sharpness"])
    render(scatter)
    legend = scatter.axes[0].get_legend()
    assert sorted(drawn_lines(legend)) == sorted([*NASTY, "optimizer"])  # entries and title
    # our own math labels are still math
    assert scatter.axes[0].get_ylabel() == r"$\log_{10} V(f)$"

    per_optimizer = fig4_optimizers(runs)
    render(per_optimizer)
    lines = drawn_lines(per_optimizer)
    for label in NASTY:
        assert lines.count(label) == 2  # the column title of both rows (volume, sharpness)


def test_user_columns_and_titles_are_literal():
    runs = nasty_runs().rename(columns={"test_acc_E": "acc $E_{", "attack_size": "size%$"})
    runs["my $\\beta$ measure"] = runs["log10_volume"]
    fig = scatter_figure(runs, ["my $\\beta$ measure"], generalization="acc $E_{",
                         color_by="size%$", title="run $1 of {2}", marker_by=None)
    render(fig)
    lines = drawn_lines(fig)
    for text in ("acc $E_{", "size%$", "run $1 of {2}", "my $\\beta$ measure"):
        assert text in lines


def test_fig5_title_names_the_run_literally():
    series = make_series().assign(optimizer=TEX_TYPO)
    (rs,) = temporal_runs(series)
    fig = fig5_temporal(rs)
    render(fig)
    assert f"optimizer={TEX_TYPO}, attack_size=0, seed=0" in drawn_lines(fig)


def _summary(name: str) -> OptimizerSummary:
    return OptimizerSummary(optimizer=name, networks=10, fitted=10, distinct_functions=2,
                            median_epochs=5.0, mean_test_error=0.1, resolved_functions=2,
                            pearson_log10=math.nan, spearman=math.nan, top_within_10x=1.0,
                            top_median_abs_log10_ratio=0.1)


@pytest.mark.parametrize("per_optimizer", [False, True])
def test_sgd_vs_bayes_figure_labels_are_literal(per_optimizer):
    rows = [{"optimizer": name, "function": f"{i}", "count": 5, "p_opt": 0.5,
             "log10_p_opt": math.log10(0.5), "log10_v_conditional": -0.5 - i,
             "log10_v_full": -3.0, "ep_converged": True, "errors_E": i}
            for name in NASTY for i in range(2)]
    fig = p_opt_vs_v_figure(rows, [_summary(n) for n in NASTY], per_optimizer=per_optimizer,
                            estimator="ep $x_{")
    render(fig)
    lines = drawn_lines(fig)
    assert "V(f|S)  (NNGP prior, ep $x_{)" in lines
    for name in NASTY:
        assert any(line.startswith(f"{name}: N=10, 2 functions") for line in lines)
        assert (name in lines) == per_optimizer  # the panel titles


def test_grid_figure_legend_is_literal():
    rows = [{**dict.fromkeys(GRID_COLUMNS, 0.1), "width": w, "train_size": 8, "batch_size": 4,
             "optimizer": name} for name in NASTY for w in (16, 64)]
    fig = grid_figure(rows)
    render(fig)
    lines = drawn_lines(fig)
    for name in NASTY:
        assert f"|S|=8, batch 4, {name}" in lines


def test_report_renders_tex_typo_labels(tmp_path):
    # Three labels and no series keep it quick; the figures above cover every label.
    labels = (TEX_TYPO, "$x$", "b\\$")
    runs = make_runs(optimizers=labels, attack_sizes=range(0, 201, 100), seeds=range(1))
    write_store(tmp_path, runs, make_series().iloc[:0])
    page = write_report(tmp_path, settings=ReportSettings(n_resamples=20)).read_text("utf-8")
    assert "fig4_optimizers" in page
    for label in labels:
        assert f">{html.escape(label)}<" in page  # the per-optimizer correlation table
