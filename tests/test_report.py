"""The sweep report: loading results.csv, aggregation, figures, summary tables, the command."""

import csv
import json
import os
import xml.etree.ElementTree as ET

import _procs
import numpy as np
import pytest
from matplotlib import colors as matplotlib_colors
from matplotlib.collections import PolyCollection

from tfprune import report
from tfprune.errors import ConfigError, DataError
from tfprune.results import COLUMNS

LAYERS = ("fc1/kernel", "fc2/kernel", "fc/kernel")
DENSITIES = (0.8**3, 0.8**6, 0.8**9)
SEEDS = (0, 1, 2)
# (method, ablations) pruned at initialization, each at every density in DENSITIES.
PRUNED = [
    ("random", "none"),
    ("magnitude", "none"),
    ("snip", "none"),
    ("snip", "shuffle"),
    ("snip", "reinit"),
    ("snip", "invert"),
    ("grasp", "none"),
    ("grasp", "shuffle+reinit"),
    ("synflow", "none"),
    ("ratio_of:snip", "none"),
]
OFFSET = {"random": -0.10, "magnitude": -0.04, "snip": -0.03, "grasp": -0.05, "synflow": -0.02}


def _accuracy(method, ablations, density, seed):
    """Deterministic accuracies: 0.01 apart per seed, lower at lower density."""
    base = 0.85 + OFFSET.get(method, -0.03) + 0.05 * np.log10(density)
    if ablations != "none":
        base -= 0.01
    return round(base + 0.01 * seed, 6)


def _layer_density(method, density, seed):
    if method == "synflow" and density == DENSITIES[-1] and seed == 0:
        return {"fc1/kernel": density * 0.5, "fc2/kernel": 0.0, "fc/kernel": 1.0}
    return {"fc1/kernel": density * 0.9, "fc2/kernel": density * 1.5, "fc/kernel": 0.8}


def _write_run(sweep, row, layer_density):
    run_dir = sweep / row["run_dir"]
    run_dir.mkdir(parents=True)
    collapsed = [path for path, d in layer_density.items() if d == 0]
    results = {
        "method": row["method"],
        "ablations": [] if row["ablations"] == "none" else row["ablations"].split("+"),
        "density_target": row["density_target"],
        "density_actual": row["density_actual"],
        "layer_density": layer_density,
        "collapsed_layers": collapsed,
        "seed": row["seed"],
        "test_accuracy": row["test_accuracy"],
    }
    (run_dir / "results.json").write_text(json.dumps(results))


def _row(method, ablations, density, seed, **overrides):
    name = f"{method.replace(':', '_')}-{ablations}-d{density:.4f}-s{seed}"
    row = {
        "method": method,
        "ablations": ablations,
        "density_target": density,
        "density_actual": density,
        "seed": seed,
        "prune_step": 0,
        "rewind_step": "",
        "dataset": "fashion_mnist",
        "model": "lenet_300_100",
        "test_accuracy": _accuracy(method, ablations, density, seed),
        "test_loss": 0.5,
        "epochs": 2,
        "wall_seconds": 1.5,
        "run_dir": f"runs/{name}",
    }
    row.update(overrides)
    return row


def _sweep_rows():
    rows = [
        _row("dense", "none", 1.0, seed, prune_step="", test_accuracy=0.90 + 0.01 * seed)
        for seed in SEEDS
    ]
    for method, ablations in PRUNED:
        rows += [_row(method, ablations, d, s) for d in DENSITIES for s in SEEDS]
    # A lottery ticket rewound to iteration 0 (no at-initialization prune step).
    rows += [
        _row("lottery", "none", d, s, prune_step="", rewind_step=0)
        for d in DENSITIES
        for s in (0, 1)
    ]
    return rows


def _write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    rows = _sweep_rows()
    for row in rows:
        density = 1.0 if row["method"] == "dense" else row["density_target"]
        _write_run(sweep, row, _layer_density(row["method"], density, row["seed"]))
    _write_csv(sweep / "results.csv", rows)
    return sweep


@pytest.fixture(scope="module")
def written(sweep):
    return report.make_report(str(sweep))


def test_load_results_converts_numbers_and_keeps_empty_cells_as_none(sweep):
    rows = report.load_results(str(sweep))
    assert len(rows) == len(_sweep_rows())
    dense = rows[0]
    assert dense["method"] == "dense" and dense["density_target"] == 1.0
    assert dense["seed"] == 0 and isinstance(dense["seed"], int)
    assert dense["prune_step"] is None and dense["rewind_step"] is None
    assert dense["test_accuracy"] == pytest.approx(0.90) and dense["epochs"] == 2
    lottery = [r for r in rows if r["method"] == "lottery"]
    assert lottery[0]["rewind_step"] == 0 and lottery[0]["prune_step"] is None


def test_aggregate_means_and_population_stds_by_hand(sweep):
    groups = report.aggregate(report.load_results(str(sweep)))
    by_key = {(g["method"], g["ablations"], round(g["density_target"], 6)): g for g in groups}
    dense = by_key[("dense", "none", 1.0)]
    assert dense["n"] == 3 and dense["seeds"] == [0, 1, 2]
    assert dense["test_accuracy_mean"] == pytest.approx(0.91)
    # Accuracies a, a + 0.01, a + 0.02: population std = 0.01 * sqrt(2/3).
    assert dense["test_accuracy_std"] == pytest.approx(0.01 * np.sqrt(2 / 3))
    snip = by_key[("snip", "shuffle", round(0.8**3, 6))]
    expected = 0.85 - 0.03 + 0.05 * np.log10(0.512) - 0.01 + 0.01
    assert snip["test_accuracy_mean"] == pytest.approx(expected, abs=1e-6)
    assert snip["n"] == 3 and snip["test_loss_std"] == 0.0
    lottery = by_key[("lottery", "none", round(0.8**6, 6))]
    assert lottery["n"] == 2 and lottery["test_accuracy_std"] == pytest.approx(0.005, abs=1e-6)
    assert lottery["rewind_step"] == 0
    assert len(groups) == 1 + len(PRUNED) * 3 + 3
    # Sorted by method, then density descending, then ablation.
    snips = [(g["density_target"], g["ablations"]) for g in groups if g["method"] == "snip"]
    assert snips[:4] == [(0.512, a) for a in ("none", "shuffle", "reinit", "invert")]
    assert [g["method"] for g in groups][:2] == ["dense", "random"]


def test_aggregate_of_a_single_run_has_std_zero():
    groups = report.aggregate([_row("snip", "none", 0.5, 3)])
    assert groups[0]["n"] == 1 and groups[0]["test_accuracy_std"] == 0.0


def test_aggregate_joins_densities_that_differ_by_float_noise():
    rows = [_row("snip", "none", 0.512, 0), _row("snip", "none", 0.8**3, 1)]
    groups = report.aggregate(rows)
    assert len(groups) == 1 and groups[0]["n"] == 2 and groups[0]["density_target"] == 0.512


def test_format_percent_has_three_significant_digits():
    assert report.format_percent(1.0) == "100"
    assert report.format_percent(0.8**3) == "51.2"
    assert report.format_percent(0.8**12) == "6.87"
    assert report.format_percent(0.018) == "1.80"
    assert report.format_percent(0.8**25) == "0.378"


def test_make_report_writes_valid_png_and_svg(sweep, written):
    out = sweep / "report"
    names = {os.path.basename(p) for p in written}
    for stem in ("accuracy-fashion_mnist-lenet_300_100", "layers-fashion_mnist-lenet_300_100-snip"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert "layers-fashion_mnist-lenet_300_100-ratio_of-snip.png" in names
    assert "layers-fashion_mnist-lenet_300_100-lottery-rewind0.png" in names
    assert {"summary.md", "summary.csv", "layer_densities.csv"} <= names
    assert all(os.path.isfile(p) for p in written)
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    for path in (p for p in written if p.endswith(".png")):
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    svg = out / "accuracy-fashion_mnist-lenet_300_100.svg"
    ET.parse(svg)
    text = svg.read_text()
    for expected in (report.X_LABEL, report.Y_LABEL, "lenet_300_100 on fashion_mnist"):
        assert expected in text
    for method in ("dense", "random", "magnitude", "snip", "grasp", "synflow", "ratio_of:snip"):
        assert method in text


def test_accuracy_figure_has_log_density_axis_panels_and_legend(sweep):
    groups = report.aggregate(report.load_results(str(sweep)))
    fig = report.plot_accuracy(groups)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["no ablation", "shuffle", "reinit", "invert", "shuffle+reinit"]
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 3)
    first = fig.axes[0]
    assert first.get_xscale() == "log" and first.xaxis_inverted()
    assert first.get_xlabel() == "Fraction of weights remaining (%)"
    assert first.get_ylabel() == "Test accuracy (%)"
    ticks = [t.get_text() for t in first.get_xticklabels()]
    assert ticks == ["100", "51.2", "26.2", "13.4"]
    assert fig.get_suptitle() == "lenet_300_100 on fashion_mnist"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    for name in ("dense", "random", "magnitude", "snip", "grasp", "synflow", "ratio_of:snip"):
        assert name in legend
    assert "lottery (rewind 0it)" in legend
    assert "un-ablated (for comparison)" in legend
    # Bands: one shaded region per drawn series; the dense line is horizontal at 91%.
    assert len(first.collections) >= 6
    dense_lines = [line for line in first.get_lines() if line.get_linestyle() == "--"]
    assert any(np.allclose(line.get_ydata(), 91.0) for line in dense_lines)
    # In an ablation panel the un-ablated snip curve is drawn faint for comparison.
    shuffle = fig.axes[1]
    snip_color = report.method_color("snip")
    faint = [ln for ln in shuffle.get_lines() if ln.get_color() == snip_color and ln.get_alpha()]
    assert faint and all(ln.get_linestyle() == "--" for ln in faint)


def test_a_panel_at_chance_does_not_squeeze_the_y_axis_of_the_others():
    rows = [_row(m, "none", d, s) for m in ("random", "snip") for d in DENSITIES for s in SEEDS]
    rows += [_row("snip", "invert", d, s, test_accuracy=0.1) for d in DENSITIES for s in SEEDS]
    plain, inverted = report.plot_accuracy(report.aggregate(rows)).axes[:2]
    # Lowest plotted value without ablation: random at 0.8^9, seed 0, is 75 + 5 log10(0.8^9) %.
    lowest = 100 * (0.75 + 0.05 * np.log10(DENSITIES[-1]))
    assert lowest - 2 < plain.get_ylim()[0] < lowest
    assert inverted.get_ylim()[0] < 10.0


def test_ablated_random_pruning_is_drawn_apart_from_random_pruning():
    rows = [
        _row("random", ablations, d, s)
        for ablations in ("none", "shuffle")
        for d in DENSITIES
        for s in SEEDS
    ]
    fig = report.plot_accuracy(report.aggregate(rows))
    shuffle = fig.axes[1]
    lines = {line.get_label(): line for line in shuffle.get_lines()}
    plain, ablated = lines["random"], lines["random (shuffle)"]
    assert plain.get_color() == ablated.get_color() == report.method_color("random")
    assert plain.get_linestyle() == "-" and plain.get_markerfacecolor() == plain.get_color()
    assert ablated.get_linestyle() == ":" and ablated.get_markerfacecolor() == "white"
    # Random minus 0.01 when shuffled (see _accuracy): the two lines are the two series.
    assert np.allclose(plain.get_ydata() - ablated.get_ydata(), 1.0)
    legend = dict(
        zip(
            [t.get_text() for t in fig.legends[0].get_texts()],
            fig.legends[0].legend_handles,
            strict=True,
        )
    )
    assert legend["random (shuffle)"].get_linestyle() == ":"
    assert legend["random"].get_linestyle() == "-"


@pytest.mark.parametrize("seeds, has_spread", [((0,), False), ((0, 1), True)])
def test_the_legend_names_a_spread_only_when_a_group_has_several_seeds(seeds, has_spread):
    rows = [_row("snip", "none", d, s, rewind_step=None) for d in DENSITIES for s in seeds]
    fig = report.plot_accuracy(report.aggregate(rows))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert ("± std over seeds" in legend) == has_spread
    assert "snip" in legend


def test_density_ticks_share_one_format():
    rows = [_row("dense", "none", 1.0, s, prune_step=None, rewind_step=None) for s in SEEDS]
    rows += [
        _row("snip", "none", d, s, rewind_step=None) for d in (0.1, 0.02, 0.8**12) for s in SEEDS
    ]
    fig = report.plot_accuracy(report.aggregate(rows))
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    # The old labels were "100", "10.0", "2.00": three formats on one axis.
    assert ticks == ["100", "10", "6.87", "2"]
    assert report.format_density_label(0.018) == "1.8"
    assert report.format_density_label(0.8**25) == "0.378"
    assert report.format_density_label(1e-7) == "0.00001"


def _legend_inside(fig):
    legend = fig.legends[0]
    fig.canvas.draw()
    box = legend.get_window_extent()
    return box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y0 >= 0


@pytest.mark.parametrize("ablations", [("none",), ("none", "shuffle")])
def test_the_legend_fits_in_the_figure_with_the_dense_reference_first(ablations):
    methods = ("random", "magnitude", "snip", "grasp", "synflow", "ratio_of:snip")
    rows = [_row("dense", "none", 1.0, s, prune_step=None, rewind_step=None) for s in SEEDS]
    rows += [
        _row(m, a, d, s, rewind_step=None)
        for m in methods
        for a in ablations
        for d in DENSITIES
        for s in SEEDS
    ]
    rows += [
        _row(m, "none", d, s, prune_step=None, rewind_step=0)
        for m in ("lottery_oneshot", "magnitude_after_training")
        for d in DENSITIES
        for s in SEEDS
    ]
    fig = report.plot_accuracy(report.aggregate(rows))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "dense" and legend[-1] == "± std over seeds"
    assert len(fig.legends) == 1
    # Five columns of these names are wider than one or two panels: cut at both edges.
    assert _legend_inside(fig)


def test_accuracy_limits_by_hand():
    # 0.9 points apart: widened to 5 about the middle (54.95-59.95), then 5% padding.
    assert report.accuracy_limits(57.0, 57.9) == pytest.approx((54.7, 60.2))
    # Wide ranges are only padded: 10-80 gets 3.5 points each side.
    assert report.accuracy_limits(10.0, 80.0) == pytest.approx((6.5, 83.5))
    # The widening stops at 0 and 100: 97-99 becomes 95-100, 0-1 becomes 0-5.
    assert report.accuracy_limits(97.0, 99.0) == pytest.approx((94.75, 100.25))
    assert report.accuracy_limits(0.0, 1.0) == pytest.approx((-0.25, 5.25))


def test_one_density_one_seed_keeps_a_few_points_of_y_range_and_says_n_is_1():
    rows = [
        _row("snip", "none", 0.01, 0, rewind_step=None, test_accuracy=0.570),
        _row("synflow", "none", 0.01, 0, rewind_step=None, test_accuracy=0.579),
    ]
    fig = report.plot_accuracy(report.aggregate(rows))
    # The old axis autoscaled to about 56.96-57.94: a 0.9 point gap filled the panel.
    assert fig.axes[0].get_ylim() == pytest.approx((54.7, 60.2))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["snip", "synflow", "n = 1 seed: no spread shown"]
    assert _legend_inside(fig)
    # With the dense reference (86.1%), the range reaches it: 57.0 to 86.1, padded by 1.455.
    rows.append(
        _row("dense", "none", 1.0, 0, prune_step=None, rewind_step=None, test_accuracy=0.861)
    )
    fig = report.plot_accuracy(report.aggregate(rows))
    assert fig.axes[0].get_ylim() == pytest.approx((55.545, 87.555))
    assert [t.get_text() for t in fig.legends[0].get_texts()][0] == "dense"


def test_a_grid_with_some_single_seed_groups_says_which_have_no_spread():
    rows = [_row("snip", "none", d, s, rewind_step=None) for d in DENSITIES for s in SEEDS]
    rows += [_row("synflow", "none", d, 0, rewind_step=None) for d in DENSITIES]
    legend = [t.get_text() for t in report.plot_accuracy(report.aggregate(rows)).legends[0].texts]
    assert legend == ["snip", "synflow", "± std over seeds", "n = 1 seed where no spread is drawn"]


def test_method_colours_are_fixed():
    assert report.method_color("snip") == report.method_color("snip") == "#e2700c"
    assert report.method_color("random") == "#7f7f7f"
    assert report.method_color("ratio_of:snip") not in report.METHOD_COLORS.values()
    assert report.method_color("something_new") == report.method_color("something_new")


def test_layer_density_figure_marks_collapsed_layers():
    densities = {
        0.5: {"net/fc1/kernel": 0.4, "net/fc2/kernel": 0.7, "net/fc/kernel": 1.0},
        0.1: {"net/fc1/kernel": 0.05, "net/fc2/kernel": 0.0, "net/fc/kernel": 0.9},
    }
    fig = report.plot_layer_densities(densities, method="synflow")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "fc2", "fc"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["50%", "10%", "layer collapsed (0 kept)"]
    with pytest.raises(DataError):
        report.plot_layer_densities({}, method="snip")


def _labelled_ticks(axis):
    """(value, label) of the ticks of `axis` that are labelled and inside the axis limits."""
    low, high = sorted(axis.get_view_interval())
    ticks = []
    for minor in (False, True):
        values = axis.get_minorticklocs() if minor else axis.get_majorticklocs()
        labels = axis.get_ticklabels(minor=minor)
        ticks += [(v, t.get_text()) for v, t in zip(values, labels, strict=True) if t.get_text()]
    return sorted((v, t) for v, t in ticks if low <= v <= high)


def test_layer_density_ticks_are_plain_numbers_up_to_a_tick_above_every_point():
    densities = {
        0.3: {"net/fc1/kernel": 0.31, "net/fc2/kernel": 0.4, "net/fc/kernel": 0.7},
        0.01: {"net/fc1/kernel": 0.0025, "net/fc2/kernel": 0.036, "net/fc/kernel": 0.3},
    }
    fig = report.plot_layer_densities(densities, method="snip")
    fig.canvas.draw()
    ax = fig.axes[0]
    # Percent axis for values from 0.25 to 70: 1-2-5 ticks from 0.2 up to 100, 0.5 never
    # "5e-01"; the old axis labelled 60 last, below the point at 70.
    labels = [label for _, label in _labelled_ticks(ax.yaxis)]
    assert labels == ["0.2", "0.5", "1", "2", "5", "10", "20", "50", "100"]
    highest = max(max(line.get_ydata()) for line in ax.get_lines())
    assert highest == pytest.approx(70.0)
    assert ax.get_ylim()[1] > 100.0


@pytest.mark.parametrize("log_scale", [True, False])
@pytest.mark.parametrize("top", [0.07, 0.7, 0.95, 1.0])
def test_layer_density_axis_has_a_labelled_tick_at_or_above_the_highest_point(log_scale, top):
    densities = {
        0.5: {"net/fc1/kernel": top / 2, "net/fc2/kernel": top, "net/fc/kernel": top / 10},
        0.02: {"net/fc1/kernel": 0.004, "net/fc2/kernel": 0.0, "net/fc/kernel": 0.006},
    }
    fig = report.plot_layer_densities(densities, method="snip", log_scale=log_scale)
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = _labelled_ticks(ax.yaxis)
    values = [y for line in ax.get_lines() for y in line.get_ydata()]
    # Every point, the collapsed one included, lies within the labelled ticks' range.
    assert max(values) == pytest.approx(100.0 * top)
    assert ticks[-1][0] >= 100.0 * top and ticks[0][0] <= 0.4
    assert not any("e" in label for _, label in ticks)


def _contrast_with_white(color):
    """WCAG 2.x contrast ratio of an sRGB colour against white, by the W3C formula."""
    rgb = np.array(matplotlib_colors.to_rgb(color), dtype=np.float64)
    linear = np.where(rgb <= 0.03928, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return (1.0 + 0.05) / (luminance + 0.05)


def test_contrast_formula_by_hand():
    # White on white is 1, black on white 21; mid grey #777777 is WCAG's 4.48.
    assert _contrast_with_white("white") == pytest.approx(1.0)
    assert _contrast_with_white("black") == pytest.approx(21.0)
    assert _contrast_with_white("#777777") == pytest.approx(4.48, abs=0.01)


def test_every_line_colour_has_contrast_3_against_white(sweep):
    """viridis ends in yellow (contrast 1.3) and tab10's orange, pink, cyan and olive fall
    below 3: a line in those is hard to see on the white figure."""
    groups = report.aggregate(report.load_results(str(sweep)))
    extra = [
        _row(m, "none", d, 0, prune_step=None, rewind_step=0)
        for m in ("lottery_oneshot", "magnitude_after_training", "something_new")
        for d in DENSITIES
    ]
    accuracy = report.plot_accuracy(groups + report.aggregate(extra))
    layers = report.plot_layer_densities(
        {0.8**k: {"net/fc1/kernel": 0.8**k, "net/fc/kernel": 0.9} for k in range(12)},
        method="snip",
    )
    colours = {
        line.get_color() for fig in (accuracy, layers) for ax in fig.axes for line in ax.get_lines()
    }
    legend = [t.get_text() for t in accuracy.legends[0].get_texts()]
    assert {"lottery_oneshot (rewind 0it)", "magnitude_after_training (rewind 0it)"} <= set(legend)
    assert len(colours) >= 20
    methods = [*report.METHOD_COLORS, "ratio_of:snip", "something_new", "another_one"]
    colours |= {report.method_color(m) for m in methods}
    low = {str(c): round(_contrast_with_white(c), 2) for c in colours}
    assert {c: r for c, r in low.items() if r < 3.0} == {}


def test_summary_markdown_rows_and_pivot(sweep, written):
    text = (sweep / "report" / "summary.md").read_text()
    assert "## lenet_300_100 on fashion_mnist" in text
    assert "| dense | none | 100 | 100 | 91.00 ± 0.82 | 3 |" in text
    # snip, density 51.2%: 0.85 - 0.03 + 0.05 log10(0.512) = 0.805466...; seeds +0, +1, +2 %.
    assert "| snip | none | 51.2 | 51.2 | 81.55 ± 0.82 | 3 |" in text
    assert "| snip | shuffle | 51.2 | 51.2 | 80.55 ± 0.82 | 3 |" in text
    assert "| lottery (rewind 0it) | none | 26.2 | 26.2 | 79.59 ± 0.50 | 2 |" in text
    full = [line for line in text.splitlines() if line.startswith("| snip |") and "±" in line]
    densities = [line.split(" | ")[2] for line in full]
    assert densities == ["51.2"] * 4 + ["26.2"] * 4 + ["13.4"] * 4
    assert full[1].startswith("| snip | shuffle | 51.2")
    # Pivot: one row per method and ablation, one column per density.
    assert "| method | ablation | 100 | 51.2 | 26.2 | 13.4 |" in text
    assert "| snip | none | – | 81.55 | 80.09 | 78.64 |" in text
    assert "![accuracy against density](accuracy-fashion_mnist-lenet_300_100.png)" in text
    assert "[svg](layers-fashion_mnist-lenet_300_100-snip.svg)" in text
    assert "runs/synflow-none-d0.1342-s0" in text and "`fc2/kernel`" in text


def test_summary_csv_holds_the_aggregated_fractions(sweep, written):
    with open(sweep / "report" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report.aggregate(report.load_results(str(sweep))))
    dense = rows[0]
    assert dense["method"] == "dense" and dense["n"] == "3" and dense["seeds"] == "0 1 2"
    assert float(dense["test_accuracy_mean"]) == pytest.approx(0.91)
    assert dense["prune_step"] == ""
    with open(sweep / "report" / "layer_densities.csv") as f:
        layers = list(csv.DictReader(f))
    assert len(layers) == 3 * len(_sweep_rows())
    assert [r["layer"] for r in layers[:3]] == list(LAYERS)


def test_one_figure_per_dataset_model_and_prune_step(tmp_path):
    rows = [_row("dense", "none", 1.0, 0, prune_step="")]
    rows += [_row("snip", "none", d, 0, prune_step=step) for d in DENSITIES for step in (0, 100)]
    rows += [_row("snip", "none", 0.5, 0, dataset="mnist", run_dir="runs/m")]
    for row in rows:
        row["run_dir"] += f"-{row['prune_step']}-{row['dataset']}"
        _write_run(tmp_path, row, _layer_density("snip", row["density_target"], 0))
    _write_csv(tmp_path / "results.csv", rows)
    written = report.make_report(str(tmp_path), str(tmp_path / "out"), formats="png")
    names = sorted(os.path.basename(p) for p in written if "accuracy-" in p)
    assert names == [
        "accuracy-fashion_mnist-lenet_300_100-step0.png",
        "accuracy-fashion_mnist-lenet_300_100-step100.png",
        "accuracy-mnist-lenet_300_100.png",
    ]
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "## lenet_300_100 on fashion_mnist (pruned at iteration 100)" in text
    # The dense reference appears in both prune-step sections.
    assert text.count("| dense | none | 100 | 100 |") == 2
    groups = report.aggregate(report.load_results(str(tmp_path)))
    with pytest.raises(DataError, match="several"):
        report.plot_accuracy(groups)
    sets = report.figure_groups(
        [g for g in groups if g["dataset"] == "mnist" or g["prune_step"] != 0]
    )
    assert [(s["dataset"], s["prune_step"], s["suffix"]) for s in sets] == [
        ("fashion_mnist", 100, ""),
        ("mnist", None, ""),
    ]


def test_a_results_csv_without_its_run_directories_still_gets_figures_and_one_warning(
    tmp_path, caplog
):
    # A results.csv copied away from its sweep: the accuracy figure and the tables only.
    rows = [_row("dense", "none", 1.0, s, prune_step="") for s in SEEDS]
    rows += [_row("snip", "none", d, s) for d in DENSITIES for s in SEEDS]
    _write_csv(tmp_path / "results.csv", rows)
    with caplog.at_level("WARNING"):
        written = report.make_report(str(tmp_path), formats="png")
    names = sorted(os.path.basename(p) for p in written)
    assert names == [
        "accuracy-fashion_mnist-lenet_300_100.png",
        "layer_densities.csv",
        "summary.csv",
        "summary.md",
    ]
    warnings = [r.getMessage() for r in caplog.records if "results.json" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("cannot read the results.json of 12 of 12 runs")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert summary.count("`runs/snip-none-") == 9


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("", "is empty"),
        (",".join(COLUMNS) + "\n", "no runs"),
        ("method,seed\nsnip,0\n", "lacks the column"),
        (",".join(COLUMNS) + "\nsnip,none,0.5,0.5,zero,0,,d,m,0.8,0.5,2,1.0,r\n", "'seed'"),
        (",".join(COLUMNS) + "\nsnip,none,half,0.5,0,0,,d,m,0.8,0.5,2,1.0,r\n", "number"),
        (",".join(COLUMNS) + "\nsnip,none,0.5\n", "3 fields"),
        (",".join(COLUMNS) + "\nsnip,none,0,0,0,0,,d,m,0.8,0.5,2,1.0,r\n", r"\(0, 1\]"),
    ],
)
def test_bad_results_csv_raises_data_error(tmp_path, content, fragment):
    (tmp_path / "results.csv").write_text(content)
    with pytest.raises(DataError, match=fragment) as info:
        report.load_results(str(tmp_path))
    assert "\n" not in str(info.value)


def test_missing_directory_or_csv_and_unknown_format(tmp_path, sweep):
    with pytest.raises(DataError, match="does not exist"):
        report.load_results(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="results.csv"):
        report.make_report(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown figure format 'gif'"):
        report.make_report(str(sweep), formats=("png", "gif"))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["{missing}"], "does not exist"),
        (["{empty}"], "is empty"),
        (["{sweep}", "--formats=png,gif"], "unknown figure format 'gif'"),
        (["{sweep}", "--colour=red"], "unrecognized arguments"),
    ],
)
def test_command_errors_are_one_line(tmp_path, sweep, capsys, args, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.csv").write_text("")
    paths = {"missing": tmp_path / "nowhere", "empty": tmp_path / "empty", "sweep": sweep}
    with pytest.raises(SystemExit) as info:
        report.main([a.format(**paths) for a in args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tfprune.report: error: ") and fragment in err


def test_command_writes_the_report(tmp_path, capsys):
    rows = [_row("dense", "none", 1.0, 0, prune_step="")]
    rows += [_row("snip", "none", d, 0) for d in DENSITIES[:2]]
    for row in rows:
        _write_run(tmp_path, row, _layer_density("snip", row["density_target"], 0))
    _write_csv(tmp_path / "results.csv", rows)
    out = tmp_path / "out"
    report.main([str(tmp_path), f"--output_dir={out}", "--formats=svg"])
    assert "summary.md" in capsys.readouterr().out
    assert (out / "summary.md").is_file()
    assert (out / "accuracy-fashion_mnist-lenet_300_100.svg").is_file()
    assert not list(out.glob("*.png"))


def test_command_line_fails_in_one_line_without_traceback(tmp_path):
    proc = _procs.run("tfprune.report", str(tmp_path / "nowhere"), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tfprune.report: error: ") and "does not exist" in last


def test_a_single_density_gets_error_bars_and_dashes_instead_of_bands():
    """A grid at one density (a later prune step, say): a band or a line of one point would be
    invisible, so each series has an error bar of ± one std and the un-ablated level a dash."""
    rows = [
        _row(m, a, 0.25, s) for m in ("snip", "synflow") for a in ("none", "shuffle") for s in SEEDS
    ]
    fig = report.plot_accuracy(report.aggregate(rows))
    plain, shuffle = fig.axes[:2]
    snip = report.method_color("snip")
    bars = [c for c in plain.collections if c.get_segments()]
    assert not [c for c in plain.collections if isinstance(c, PolyCollection)]
    segments = {tuple(np.round(seg[:, 1], 6)) for c in bars for seg in c.get_segments()}
    # snip, no ablation: seeds give 0.85 - 0.03 + 0.05 log10(0.25) + {0, .01, .02}.
    mean = 100 * (0.82 + 0.05 * np.log10(0.25) + 0.01)
    std = 100 * np.std([0.0, 0.01, 0.02])
    assert (round(mean - std, 6), round(mean + std, 6)) in segments
    dashes = [ln for ln in shuffle.get_lines() if ln.get_color() == snip and ln.get_alpha()]
    assert [ln.get_marker() for ln in dashes] == ["_"]
    assert np.allclose(dashes[0].get_ydata(), mean)
    legend = fig.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    spread = legend.legend_handles[names.index("± std over seeds")]
    assert spread.get_marker() == "|"
