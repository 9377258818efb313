import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from stabook import baselines, compare, viz  # noqa: E402


def _results():
    def run(ratio, share=None):
        result = {"equivariance": {"rotate": {"mae": ratio / 10, "identity_mae": 0.1}},
                  "equivariance_ratio": {"rotate": ratio}, "disentanglement": None}
        if share is not None:
            result["disentanglement"] = {"score": 1.0, "matched_share": share}
        return result

    per_seed = {"sta": {0: run(0.4, 0.8), 1: run(0.6, 0.6)}, "vae": {0: run(0.9), 1: run(0.7)}}
    return {"variants": {name: {"per_seed": {str(s): r for s, r in runs.items()},
                                "summary": compare.summarise(runs)} for name, runs in per_seed.items()}}


def test_comparison_bars_show_means_and_standard_deviations():
    results = _results()
    fig, ax = plt.subplots()
    viz.plot_comparison(ax, results, "ratio_rotate", baselines.LABELS)
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == pytest.approx([0.5, 0.8])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["STA", "VAE (one direction)"]
    plt.close(fig)
    fig = viz.plot_comparison_panels(results, ["rotate"], baselines.LABELS)
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 1          # the VAE has no matched share
    assert "identity" not in " ".join(ax.get_title() for ax in fig.axes)
    plt.close(fig)


def test_figures_fit_the_page_with_readable_text():
    # every text of the comparison figure and an animation grid is at least MIN_FONT points, and the
    # figures are at most PAGE_WIDTH inches wide with at most three panels to a row
    viz.use_book_style()
    fig = viz.plot_comparison_panels(_results(), ["rotate"],
                                     baselines.LABELS)
    texts = [t for ax in fig.axes for t in (ax.title, *ax.get_xticklabels(), *ax.get_yticklabels())]
    assert texts and min(t.get_fontsize() for t in texts) >= viz.MIN_FONT
    assert fig.get_figwidth() <= viz.PAGE_WIDTH
    plt.close(fig)
    import torch
    anim = viz.animate_sequences(torch.rand(12, 3, 3, 8, 8), labels=[str(i) for i in range(12)])
    axes = anim._fig.axes
    columns = {round(ax.get_position().x0, 3) for ax in axes}
    assert len(columns) == 6 and len(axes) == 12


def test_comparison_table_marks_missing_metrics():
    table = compare.comparison_table(_results(), {"ratio_rotate": "rotate", "matched_share": "share"}, digits=2)
    lines = table.splitlines()
    assert lines[0] == "| model | rotate | share |"
    assert lines[2] == "| STA | 0.50 ± 0.14 | 0.70 ± 0.14 |"
    assert lines[3].endswith("| - |")


def test_step_errors_plot_one_line_per_curve():
    fig, ax = plt.subplots()
    viz.plot_step_errors(ax, {"a": [0, 1, 2], "b": [0, 2, 4]}, mark=1, legend=False)
    assert len(ax.get_lines()) == 3 and ax.get_legend() is None                # two curves and the marker
    plt.close(fig)
