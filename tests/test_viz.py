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
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([0.5, 0.8])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["STA", "VAE (one direction)"]
    plt.close(fig)
    fig = viz.plot_comparison_panels(results, ["rotate"], baselines.LABELS)
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 1          # the VAE has no matched share
    plt.close(fig)


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
