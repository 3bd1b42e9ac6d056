"""Figures and tables from a sweep: accuracy against density, per-layer densities, a summary.

    python -m tfprune.report SWEEP_DIR [--output_dir=SWEEP_DIR/report] [--formats=png,svg]

`SWEEP_DIR` holds the `results.csv` written by `python -m tfprune.sweep` and the run directories
it lists. The report goes to `SWEEP_DIR/report/` (every file written atomically):

- `accuracy-<dataset>-<model>.<fmt>`: test accuracy against the fraction of weights remaining
  (log axis, 100% at the left, as in Frankle et al. 2021), one panel per ablation, mean ± std
  over seeds, the dense network and random pruning as references;
- `layers-<dataset>-<model>-<method>.<fmt>`: the per-layer densities of each method, one line
  per density of the sweep (un-ablated runs, lowest seed);
- `summary.md` and `summary.csv`: the aggregated numbers; `layer_densities.csv`: the per-layer
  densities of every run.

When the at-initialization methods were pruned at more than one step, every file above except
`summary.csv` and `layer_densities.csv` exists once per step (`-step<k>` in the name); the
references (dense, magnitude after training, lottery tickets) appear in each.

Errors a user can cause end with a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from absl import logging

try:
    from matplotlib import colormaps
    from matplotlib import colors as mcolors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
        NullLocator,
    )
except ImportError as error:  # matplotlib comes with the optional `plot` extra
    _MATPLOTLIB_MISSING: ImportError | None = error
else:
    _MATPLOTLIB_MISSING = None

from tfprune import registry
from tfprune._io import atomic_path, write_text
from tfprune.cli import fail
from tfprune.errors import ConfigError, DataError, OutputError, TfpruneError
from tfprune.results import TableError, describe, parse_row, read_table

PROGRAM = "tfprune.report"


FORMATS = ("png", "svg", "pdf")
X_LABEL = "Fraction of weights remaining (%)"
Y_LABEL = "Test accuracy (%)"
LAYER_Y_LABEL = "Fraction of the layer's weights remaining (%)"

# Every line colour of the report reaches this WCAG contrast ratio against the white background.
MIN_CONTRAST = 3.0
# The colour of each registered method (`tfprune.registry`), as `method_color` gives it.
METHOD_COLORS = {m.name: registry.style(m.name).color for m in registry.methods()}
DENSE = registry.dense().name
RANDOM = registry.baseline().name
# The y axis of an accuracy panel spans at least this many accuracy points, so that runs a
# fraction of a point apart do not fill the panel's height.
MIN_Y_SPAN = 5.0
N1_NOTE = "n = 1 seed: no spread shown"
N1_SOME_NOTE = "n = 1 seed where no spread is drawn"


def load_results(sweep_dir: str) -> list[dict]:
    """Reads `results.csv` of a sweep, one dict per run, numbers converted.

    Args:
        sweep_dir: the sweep directory (holding `results.csv`).

    Returns:
        The rows in file order. `density_target`, `density_actual`, `test_accuracy`, `test_loss`
        and `wall_seconds` are floats; `seed`, `prune_step`, `rewind_step` and `epochs` ints;
        an empty optional cell is None. `ablations` stays the CSV string ("none",
        "shuffle+reinit", ...).

    Raises:
        DataError: the directory or the CSV is missing, empty, lacks a column, or holds a
            value that is not a number where one is expected.

    Example:
        >>> rows = load_results("sweeps/lenet")
        >>> rows[0]["method"], rows[0]["density_target"]
        ('dense', 1.0)
    """
    if not os.path.isdir(sweep_dir):
        raise DataError(f"sweep directory {sweep_dir!r} does not exist")
    path = os.path.join(sweep_dir, "results.csv")
    if not os.path.isfile(path):
        raise DataError(
            f"{path!r} does not exist: run `python -m tfprune.sweep` with this output directory"
        )
    try:
        table, damaged = read_table(path)
    except OSError as error:
        raise DataError(f"cannot read {path!r}: {error}") from error
    except TableError as error:
        if "no header" in str(error):
            raise DataError(f"{path!r} is empty: the sweep has not finished a run yet") from None
        raise DataError(f"{path!r} {error}") from None
    if damaged:
        raise DataError(
            f"{path!r} has damaged lines: {describe(damaged)}; run the sweep command again to "
            "rewrite it from the run directories"
        )
    if not table:
        raise DataError(f"{path!r} has a header but no runs: the sweep has not finished a run yet")
    return [parse_row(list(row), list(row.values())) for _, row in table]


def aggregate(rows: Iterable[Mapping]) -> list[dict]:
    """Groups runs that differ only in their seed: mean, std and count of the test metrics.

    Runs are grouped by dataset, model, prune_step, rewind_step, method, ablations and
    density_target (rewind_step as well, so lottery tickets rewound to different steps stay
    apart; density_target compared to 10 significant digits). The std is the population
    standard deviation (numpy's `ddof=0`), so a group of one run has std 0.

    Args:
        rows: runs as `load_results` returns them.

    Returns:
        One dict per group, sorted by dataset, model, method (`tfprune.registry.sort_key`),
        rewind_step, prune_step, density_target descending, then ablations. Each holds the
        seven keys above, `n`, `seeds` (sorted list), `test_accuracy_mean`,
        `test_accuracy_std`, `test_loss_mean`, `test_loss_std`, `density_actual_mean` (None
        where the column was empty) and `run_dirs` (by seed).

    Example:
        >>> groups = aggregate(load_results("sweeps/lenet"))
        >>> g = groups[0]
        >>> g["method"], g["n"], round(g["test_accuracy_mean"], 4)
        ('dense', 3, 0.8912)
    """
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        key = tuple(
            _density_key(row[name]) if name == "density_target" else row.get(name)
            for name in _GROUP_KEYS
        )
        groups.setdefault(key, []).append(row)
    result = []
    for key, members in groups.items():
        entry = dict(zip(_GROUP_KEYS, key, strict=True))
        entry["n"] = len(members)
        entry["seeds"] = sorted(m["seed"] for m in members)
        for name in ("test_accuracy", "test_loss", "density_actual"):
            values = [m.get(name) for m in members]
            values = np.array([v for v in values if v is not None], dtype=np.float64)
            mean = float(values.mean()) if values.size else None
            if name == "density_actual":
                entry["density_actual_mean"] = mean
            else:
                entry[f"{name}_mean"] = mean
                entry[f"{name}_std"] = float(values.std()) if values.size else None
        entry["run_dirs"] = [m.get("run_dir", "") for m in sorted(members, key=_seed)]
        result.append(entry)
    result.sort(key=_group_sort_key)
    return result


_GROUP_KEYS = (
    "dataset",
    "model",
    "prune_step",
    "rewind_step",
    "method",
    "ablations",
    "density_target",
)


def _density_key(density: float) -> float:
    # Writers may spell a grid density as 0.512 or 0.8**3 = 0.5120000000000001.
    return float(f"{density:.10g}")


def _seed(row: Mapping) -> int:
    return row["seed"]


def _none_first(value) -> tuple:
    return (value is not None, value if value is not None else 0)


def _method_key(method: str) -> tuple:
    return registry.sort_key(method)


def _ablation_key(ablations: str) -> tuple:
    if ablations == "none":
        return (0, ())
    names = ablations.split("+")
    ablations = registry.ABLATIONS
    order = tuple(ablations.index(n) if n in ablations else len(ablations) for n in names)
    return (len(names), order, ablations)


def _group_sort_key(entry: Mapping) -> tuple:
    return (
        entry["dataset"],
        entry["model"],
        _method_key(entry["method"]),
        _none_first(entry["rewind_step"]),
        _none_first(entry["prune_step"]),
        -entry["density_target"],
        _ablation_key(entry["ablations"]),
    )


def format_percent(fraction: float) -> str:
    """A fraction as a percentage with 3 significant digits: 1 → "100", 0.0687 → "6.87".

    Example:
        >>> format_percent(0.8**3), format_percent(0.018)
        ('51.2', '1.80')
    """
    text = f"{100.0 * fraction:#.3g}"
    if "e" not in text:
        text = text.rstrip(".")
    return text


def format_density_label(fraction: float) -> str:
    """A fraction as a percentage for axis ticks and legends, every label in one format: at
    most 3 significant digits, no trailing zeros, never an exponent.

    Example:
        >>> format_density_label(1.0), format_density_label(0.1), format_density_label(0.8**3)
        ('100', '10', '51.2')
    """
    return _plain_number(100.0 * fraction)


def format_accuracy(mean: float, std: float) -> str:
    """Mean ± std of an accuracy fraction, in percent with two decimals: "91.23 ± 0.45"."""
    return f"{100.0 * mean:.2f} ± {100.0 * std:.2f}"


def method_label(method: str, rewind_step: int | None = None) -> str:
    """The name a method has in legends and tables ("lottery (rewind 1000it)" when rewound)."""
    return method if rewind_step is None else f"{method} (rewind {rewind_step}it)"


def method_color(method: str) -> str:
    """The fixed colour of a method (hex), the same in every figure (`tfprune.registry.style`).

    `ratio_of:<method>` gets a darker shade of its method's colour; unknown methods a colour
    derived from their name.
    """
    return registry.style(method).color


def _method_marker(method: str) -> str:
    return registry.style(method).marker


def _ablation_title(ablations: str) -> str:
    return "no ablation" if ablations == "none" else ablations


def figure_groups(aggregated: Sequence[Mapping]) -> list[dict]:
    """Splits aggregated results into the sets that share one accuracy figure.

    One set per (dataset, model) and, when the at-initialization methods were pruned at more
    than one step, per step; the reference methods (dense, after-training baselines) belong to
    every set of their (dataset, model).

    Args:
        aggregated: groups as `aggregate` returns them.

    Returns:
        Dicts with `dataset`, `model`, `prune_step` (the step of the set's at-initialization
        methods; None for a single set pruned at step 0 or without such methods), `suffix`
        (for file names: "" for a single set, else "-step<k>") and `rows` (the set's groups).
    """
    combos: dict[tuple, list[Mapping]] = {}
    for entry in aggregated:
        combos.setdefault((entry["dataset"], entry["model"]), []).append(entry)
    result = []
    for (dataset, model), entries in combos.items():
        steps = sorted(
            {e["prune_step"] for e in entries if not registry.is_reference(e["method"])},
            key=_none_first,
        )
        if len(steps) <= 1:
            # A single step is named (in titles) only when it is not the usual 0.
            step = steps[0] if steps and steps[0] else None
            result.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "prune_step": step,
                    "suffix": "",
                    "rows": list(entries),
                }
            )
            continue
        for step in steps:
            rows = [
                e for e in entries if registry.is_reference(e["method"]) or e["prune_step"] == step
            ]
            suffix = "-step-none" if step is None else f"-step{step}"
            result.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "prune_step": step,
                    "suffix": suffix,
                    "rows": rows,
                }
            )
    return result


def _figure_title(dataset: str, model: str, prune_step: int | None) -> str:
    title = f"{model} on {dataset}"
    if prune_step is not None:
        title += f" (pruned at iteration {prune_step})"
    return title


def _series(rows: Iterable[Mapping], ablations: str) -> dict[tuple, list[Mapping]]:
    """{(method, rewind_step): groups sorted by density descending} for one ablation."""
    series: dict[tuple, list[Mapping]] = {}
    for entry in rows:
        if entry["ablations"] == ablations:
            series.setdefault((entry["method"], entry["rewind_step"]), []).append(entry)
    for entries in series.values():
        entries.sort(key=lambda e: -e["density_target"])
    ordered = sorted(series, key=lambda k: (_method_key(k[0]), _none_first(k[1])))
    return {k: series[k] for k in ordered}


def _density_ticks(densities: Iterable[float], max_ticks: int = 8) -> list[float]:
    """At most `max_ticks` of the densities, evenly thinned, the highest always kept."""
    values = sorted({d for d in densities if d > 0}, reverse=True)
    step = max(1, math.ceil(len(values) / max_ticks))
    return values[::step]


def _draw_series(
    ax,
    entries: Sequence[Mapping],
    method: str,
    *,
    faint: bool,
    label: str | None,
    variant: bool = False,
) -> tuple[float, float]:
    """One method's curve: markers, a ± std band (or error bars at a single density).

    `faint` draws a thin dashed line only (an un-ablated curve repeated for comparison);
    `variant` draws the curve dotted with open markers, so that a second curve of the same
    colour in one panel (random pruning ablated, beside random itself) reads apart.

    Returns:
        The lowest and highest accuracy drawn (%), bands included.
    """
    x = np.array([e["density_target"] for e in entries]) * 100.0
    mean = np.array([e["test_accuracy_mean"] for e in entries]) * 100.0
    std = np.array([e["test_accuracy_std"] for e in entries]) * 100.0
    color = method_color(method)
    # A line and a band need two densities; one density gets a dash and an error bar instead.
    single = len(x) == 1
    if faint:
        ax.plot(
            x,
            mean,
            color=color,
            linestyle="--",
            linewidth=1.0,
            alpha=0.45,
            zorder=1,
            marker="_" if single else None,
            markersize=14,
        )
        return float(mean.min()), float(mean.max())
    if single:
        ax.errorbar(x, mean, yerr=std, fmt="none", ecolor=color, alpha=0.6, capsize=4, zorder=2)
    else:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0, zorder=2)
    ax.plot(
        x,
        mean,
        color=color,
        marker=_method_marker(method),
        markersize=5 if variant else 4,
        markerfacecolor="white" if variant else color,
        linestyle=":" if variant else "-",
        linewidth=1.5,
        label=label,
        zorder=3,
    )
    return float((mean - std).min()), float((mean + std).max())


def accuracy_limits(low: float, high: float, min_span: float = MIN_Y_SPAN) -> tuple[float, float]:
    """The y limits (%) of an accuracy panel whose values reach from `low` to `high`.

    The range is widened about its middle to `min_span` points at least (never past 0 or 100
    because of the widening), then padded by 5% on each side, as matplotlib pads.

    Example:
        >>> [round(v, 2) for v in accuracy_limits(57.0, 57.9)]
        [54.7, 60.2]
    """
    extra = max(0.0, min_span - (high - low))
    low, high = low - extra / 2, high + extra / 2
    if low < 0.0:
        low, high = 0.0, high - low
    elif high > 100.0:
        low, high = low - (high - 100.0), 100.0
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def _need_matplotlib() -> None:
    if _MATPLOTLIB_MISSING is not None:
        raise ConfigError(
            f"the report needs matplotlib ({_MATPLOTLIB_MISSING}): pip install 'tfprune[plot]'"
        )


def plot_accuracy(
    aggregated: Sequence[Mapping],
    *,
    dataset: str | None = None,
    model: str | None = None,
    prune_step: int | None = None,
) -> Figure:
    """Test accuracy against the fraction of weights remaining, one panel per ablation.

    The x axis is logarithmic and decreasing (100% at the left), as in Frankle et al. (2021),
    its ticks in one format (`format_density_label`). Each panel's y axis spans at least
    `MIN_Y_SPAN` accuracy points (`accuracy_limits`), the dense reference included.
    Each method is one line of its fixed colour with markers at the densities of the sweep and a
    shaded band of ± one std over seeds (the legend says when groups of one seed have none).
    The dense network is a dashed horizontal line with its band; random pruning is drawn in
    grey in every panel, and in an ablation's panel random pruning with that ablation is drawn
    dotted with open markers beside it. In an ablation's panel the un-ablated curve of every
    ablated method is repeated, faint and dashed. One legend, in as many columns as fit the
    figure's width, serves all panels.

    Args:
        aggregated: groups as `aggregate` returns them; may hold several (dataset, model)
            combinations, from which `dataset` and `model` pick one.
        dataset: which dataset to draw (may be omitted if there is only one).
        model: which model to draw (may be omitted if there is only one).
        prune_step: draw the at-initialization methods pruned at this step only (references
            are always drawn); None draws all rows.

    Returns:
        A matplotlib Figure (Agg canvas); `fig.axes` are the panels, `fig.legends[0]` the legend.

    Raises:
        DataError: the selection is empty or ambiguous.

    Example:
        >>> fig = plot_accuracy(aggregate(load_results("sweeps/lenet")))
        >>> fig.savefig("accuracy.png")
    """
    _need_matplotlib()
    rows = _select(aggregated, dataset, model)
    dataset, model = rows[0]["dataset"], rows[0]["model"]
    if prune_step is not None:
        rows = [
            r for r in rows if registry.is_reference(r["method"]) or r["prune_step"] == prune_step
        ]
    panels = sorted({r["ablations"] for r in rows if r["method"] != DENSE}, key=_ablation_key)
    if "none" not in panels:
        panels.insert(0, "none")
    baseline = _series(rows, "none")
    dense = [e for (m, _), es in baseline.items() if m == DENSE for e in es]
    random_key = next((k for k in baseline if k[0] == RANDOM), None)

    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.7 * nrows + 1.0), layout="constrained")
    FigureCanvasAgg(fig)
    # Each panel scales its own y axis (every panel repeats its references): an ablation that
    # falls to chance must not squeeze the others' differences of a few points into one line.
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=False, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)

    handles: dict[str, object] = {}
    all_densities = [r["density_target"] for r in rows]
    for index, (ax, ablation) in enumerate(zip(axes, panels, strict=False)):
        series = _series(rows, ablation)
        drawn: list[tuple[float, float]] = []
        if dense:
            mean = 100.0 * dense[0]["test_accuracy_mean"]
            std = 100.0 * dense[0]["test_accuracy_std"]
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.08, linewidth=0)
            ax.axhline(mean, color="black", linestyle="--", linewidth=1.2, zorder=1)
            drawn.append((mean - std, mean + std))
            handles.setdefault(
                DENSE, Line2D([], [], color="black", linestyle="--", linewidth=1.2)
            )
        if random_key is not None and ablation != "none":
            drawn.append(
                _draw_series(ax, baseline[random_key], RANDOM, faint=False, label=RANDOM)
            )
        for (method, rewind), entries in series.items():
            if method == DENSE:
                continue
            label = method_label(method, rewind)
            if ablation != "none":
                if method == RANDOM:
                    label = f"{RANDOM} ({ablation})"
                # Random's un-ablated curve is already drawn in full as the reference.
                if (method, rewind) in baseline and method != RANDOM:
                    drawn.append(
                        _draw_series(ax, baseline[(method, rewind)], method, faint=True, label=None)
                    )
            variant = method == RANDOM and ablation != "none"
            drawn.append(
                _draw_series(ax, entries, method, faint=False, label=label, variant=variant)
            )
        if drawn:
            ax.set_ylim(*accuracy_limits(min(d[0] for d in drawn), max(d[1] for d in drawn)))
        for line in ax.get_lines():
            if line.get_label() and not line.get_label().startswith("_"):
                handles.setdefault(line.get_label(), line)
        ax.set_xscale("log")
        ticks = [100.0 * d for d in _density_ticks(all_densities)]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_density_label(v / 100.0)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=45, labelbottom=True)
        ax.set_title(_ablation_title(ablation))
        ax.set_xlabel(X_LABEL)
        if index % ncols == 0:
            ax.set_ylabel(Y_LABEL)
        ax.grid(True, which="major", alpha=0.3)
    # Shared x: inverting one axis inverts all of them.
    low, high = min(all_densities) * 100.0, max(all_densities) * 100.0
    axes[0].set_xlim(high * 1.15, low / 1.15)

    if any(a != "none" for a in panels):
        handles["un-ablated (for comparison)"] = Line2D(
            [], [], color="grey", linestyle="--", alpha=0.6
        )
    if any(r["n"] > 1 for r in rows):
        if len(set(all_densities)) == 1:
            spread = Line2D([], [], color="grey", marker="|", markersize=10, linestyle="none")
        else:
            spread = Patch(color="grey", alpha=0.25)
        handles.setdefault("± std over seeds", spread)
    # A group of one seed has no spread: say so, or its missing band reads as a tiny one.
    if any(r["n"] == 1 for r in rows):
        note = N1_SOME_NOTE if "± std over seeds" in handles else N1_NOTE
        handles[note] = Line2D([], [], linestyle="none")
    fig.suptitle(_figure_title(dataset, model, prune_step))
    _fit_legend(fig, handles)
    return fig


def _fit_legend(fig: Figure, handles: Mapping[str, object], max_columns: int = 5) -> None:
    """The figure's legend below the panels, in as many columns (up to `max_columns`) as fit
    in the figure's width: a wider legend would be cut at both edges."""
    for ncol in range(min(len(handles), max_columns), 0, -1):
        legend = fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=ncol,
            frameon=False,
        )
        fig.draw_without_rendering()
        box = legend.get_window_extent()
        if ncol == 1 or (box.x0 >= 0 and box.x1 <= fig.bbox.width):
            return
        legend.remove()


def _select(aggregated: Sequence[Mapping], dataset: str | None, model: str | None) -> list:
    rows = [
        r
        for r in aggregated
        if (dataset is None or r["dataset"] == dataset) and (model is None or r["model"] == model)
    ]
    if not rows:
        raise DataError(f"no results for dataset {dataset!r} and model {model!r}")
    combos = sorted({(r["dataset"], r["model"]) for r in rows})
    if len(combos) > 1:
        names = ", ".join(f"{m} on {d}" for d, m in combos)
        raise DataError(f"results hold several datasets/models ({names}): choose one")
    return rows


def _abbreviate(paths: Sequence[str], width: int = 22) -> list[str]:
    """Short tick labels: no trailing "/kernel", no shared first component, long names cut."""
    parts = [p.split("/") for p in paths]
    parts = [p[:-1] if len(p) > 1 and p[-1] == "kernel" else p for p in parts]
    firsts = {p[0] for p in parts}
    if len(firsts) == 1 and all(len(p) > 1 for p in parts):
        parts = [p[1:] for p in parts]
    labels = []
    for p in parts:
        label = "/".join(p)
        labels.append(label if len(label) <= width else "…" + label[-(width - 1) :])
    return labels


def plot_layer_densities(
    layer_densities: Mapping[float, Mapping[str, float]],
    *,
    method: str,
    title: str | None = None,
    log_scale: bool = True,
) -> Figure:
    """Per-layer density of one method, one line per overall density.

    Args:
        layer_densities: {overall density: {kernel path: fraction kept}}, each in network
            order (as `results.json` stores `layer_density`).
        method: the method's name, for the default title and error messages.
        title: the figure title (default: "Per-layer density: <method>").
        log_scale: draw the densities on a log axis; a collapsed layer (density 0) is then
            marked by a red cross at the bottom of the axis.

    Returns:
        A matplotlib Figure (Agg canvas) with one Axes.

    Raises:
        DataError: `layer_densities` is empty.

    Example:
        >>> densities = {0.1: {"fc1/kernel": 0.05, "fc2/kernel": 0.2}}
        >>> fig = plot_layer_densities(densities, method="snip")
        >>> fig.savefig("layers-snip.png")
    """
    _need_matplotlib()
    if not layer_densities:
        raise DataError(f"no per-layer densities to plot for method {method!r}")
    paths: list[str] = []
    for densities in layer_densities.values():
        paths.extend(p for p in densities if p not in paths)
    overall = sorted(layer_densities, reverse=True)
    positive = [
        100.0 * v for densities in layer_densities.values() for v in densities.values() if v > 0
    ]
    floor = (min(positive) if positive else 100.0) / 3.0

    fig = Figure(figsize=(max(6.0, 0.35 * len(paths) + 3.0), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(paths))
    collapsed_drawn = False
    for color, density in zip(_layer_colors(len(overall)), overall, strict=True):
        values = layer_densities[density]
        y = np.array([100.0 * values.get(p, np.nan) for p in paths])
        plotted = np.where(y == 0, floor, y) if log_scale else y
        ax.plot(
            x,
            plotted,
            color=color,
            marker="o",
            markersize=3,
            linewidth=1.2,
            label=f"{format_density_label(density)}%",
        )
        zero = y == 0
        if log_scale and zero.any():
            ax.plot(
                x[zero],
                plotted[zero],
                linestyle="none",
                marker="x",
                color="red",
                markersize=7,
                label=None if collapsed_drawn else "layer collapsed (0 kept)",
                zorder=4,
            )
            collapsed_drawn = True
    # Labelled ticks from at or below the lowest value to at or above the highest, and the
    # axis ends just beyond them: no point is drawn above the last number of the axis.
    if log_scale:
        ax.set_yscale("log")
        ticks = _log_ticks(min(positive, default=floor), max(positive, default=floor))
        bottom = min(ticks[0], floor) if collapsed_drawn else ticks[0]
        ax.set_ylim(bottom / 1.15, ticks[-1] * 1.15)
        ax.yaxis.set_minor_locator(LogLocator(subs="auto"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ticks = list(MaxNLocator(nbins=6).tick_values(0.0, max(positive, default=1.0)))
        ax.set_ylim(ticks[0] - 0.02 * ticks[-1], ticks[-1] * 1.04)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain_number(v)))
    ax.set_xticks(x)
    ax.set_xticklabels(_abbreviate(paths), rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("Layer (kernel, network order)")
    ax.set_ylabel(LAYER_Y_LABEL)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(
        title="overall density",
        fontsize=7,
        title_fontsize=8,
        ncol=2 if len(overall) > 8 else 1,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
    )
    fig.suptitle(title or f"Per-layer density: {method}")
    return fig


def _log_ticks(low: float, high: float) -> list[float]:
    """Ticks 1, 2, 5 × 10^k (only 1 × 10^k beyond three decades), from the largest at or below
    `low` to the smallest at or above `high` (0 < low <= high)."""
    mantissas = (1.0, 2.0, 5.0) if high / low <= 1e3 else (1.0,)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    candidates = sorted(m * 10.0**k for k in range(first, last + 1) for m in mantissas)
    # A value a rounding error away from a tick has that tick as its bound.
    bottom = max(c for c in candidates if c <= low * (1 + 1e-9))
    top = min(c for c in candidates if c >= high * (1 - 1e-9))
    return [c for c in candidates if bottom <= c <= top]


def _plain_number(value: float) -> str:
    """At most 3 significant digits, no exponent, no trailing zeros: 0.05 → "0.05", 100 → "100"."""
    return np.format_float_positional(value, precision=3, fractional=False, trim="-")


def _contrast_with_white(rgb: Sequence[float]) -> float:
    """The WCAG 2 contrast ratio of an sRGB colour (components in [0, 1]) against white."""
    rgb = np.asarray(rgb[:3], dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = float(linear @ np.array([0.2126, 0.7152, 0.0722]))
    return 1.05 / (luminance + 0.05)


def _legible(color) -> tuple[float, float, float]:
    """`color`, darkened (its hue kept) until its contrast against white is `MIN_CONTRAST`."""
    rgb = np.array(mcolors.to_rgb(color))
    if _contrast_with_white(rgb) >= MIN_CONTRAST:
        return tuple(float(c) for c in rgb)
    low, high = 0.0, 1.0  # the scale factor: `low` is always legible
    for _ in range(30):
        middle = (low + high) / 2
        if _contrast_with_white(middle * rgb) >= MIN_CONTRAST:
            low = middle
        else:
            high = middle
    return tuple(float(c) for c in low * rgb)


def _layer_colors(count: int) -> list[tuple[float, float, float]]:
    """One colour per overall density, dark purple to olive: viridis, its light green and
    yellow end darkened to stay legible on white."""
    cmap = colormaps["viridis"]
    return [_legible(cmap(i / max(1, count - 1))) for i in range(count)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def _save(fig: Figure, stem: str, formats: Sequence[str]) -> list[str]:
    written = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        written.append(path)
    return written


def _read_runs(sweep_dir: str, run_dirs: Iterable[str]) -> dict[str, dict | None]:
    """The results.json of each run, None where it cannot be read (one warning for all)."""
    runs: dict[str, dict | None] = {}
    errors = []
    for run_dir in run_dirs:
        path = os.path.join(sweep_dir, run_dir, "results.json")
        try:
            with open(path) as f:
                runs[run_dir] = json.load(f)
        except (OSError, ValueError) as error:
            runs[run_dir] = None
            errors.append(f"{path}: {error}")
    if errors:
        logging.warning(
            "cannot read the results.json of %d of %d runs (the first: %s); the per-layer "
            "figures and the layer-collapse list leave them out",
            len(errors),
            len(runs),
            errors[0],
        )
    return runs


def write_summary(
    aggregated: Sequence[Mapping],
    output_dir: str,
    *,
    figures: Mapping[str, Sequence[str]] | None = None,
    collapsed: Mapping[str, Sequence[str]] | None = None,
    unreadable: Sequence[str] = (),
    sweep_dir: str | None = None,
) -> list[str]:
    """Writes `summary.md` (tables, figure links) and `summary.csv` (the aggregated numbers).

    `summary.md` has a section per figure set (see `figure_groups`) with a compact pivot of mean
    test accuracy (rows: method and ablation, columns: density) and the full table of mean ±
    std and n, sorted by method, density (descending) and ablation. Densities are percentages
    with 3 significant digits, accuracies percentages with 2 decimals; `summary.csv` keeps the
    fractions.

    Args:
        aggregated: groups as `aggregate` returns them.
        output_dir: where to write (must exist).
        figures: {"<dataset>/<model><suffix>" (see `figure_groups`): {"accuracy" or a
            method's label: paths of its figures}}, linked relative to `output_dir`.
        collapsed: {run_dir: kernel paths that keep no weight}.
        unreadable: run directories whose `results.json` could not be read.
        sweep_dir: the sweep directory, named in the header.

    Returns:
        The two paths written.

    Example:
        >>> write_summary(aggregate(load_results("sweeps/lenet")), "sweeps/lenet/report")
        ['sweeps/lenet/report/summary.md', 'sweeps/lenet/report/summary.csv']
    """
    figures = figures or {}
    lines = ["# Sweep summary", ""]
    if sweep_dir is not None:
        lines.append(f"Sweep directory: `{sweep_dir}`.")
    runs = sum(g["n"] for g in aggregated)
    lines += [
        f"{runs} runs in {len(aggregated)} groups. Test accuracy in %, mean ± population std "
        "over seeds (n = number of seeds); densities are the fraction of prunable weights "
        "remaining, in %.",
        "",
    ]
    for group in figure_groups(aggregated):
        rows = group["rows"]
        lines += [f"## {_figure_title(group['dataset'], group['model'], group['prune_step'])}", ""]
        links = figures.get(_set_key(group), {})
        links = {
            label: [os.path.relpath(p, output_dir) for p in paths] for label, paths in links.items()
        }
        accuracy = links.pop("accuracy", [])
        images = [p for p in accuracy if p.endswith((".png", ".svg"))]
        if images:
            lines += [f"![accuracy against density]({images[0]})", ""]
        if accuracy:
            lines += ["Accuracy against density: " + _link_list(accuracy), ""]
        if links:
            items = [f"{label} {_link_list(paths)}" for label, paths in links.items()]
            lines += ["Per-layer densities: " + "; ".join(items), ""]
        lines += _pivot_table(rows) + [""]
        lines += ["All groups, by method, density and ablation:", ""] + _full_table(rows) + [""]
    if collapsed:
        lines += ["## Layer collapse", ""]
        lines.append(
            f"{len(collapsed)} run(s) have layers that keep no weight (results.json "
            "`collapsed_layers`):"
        )
        lines.append("")
        for run_dir, layers in sorted(collapsed.items()):
            lines.append(f"- `{run_dir}`: {', '.join(f'`{p}`' for p in layers)}")
        lines.append("")
    if unreadable:
        lines += [
            "Runs without a readable results.json (left out of the per-layer densities): "
            + ", ".join(f"`{r}`" for r in sorted(unreadable)),
            "",
        ]
    md_path = os.path.join(output_dir, "summary.md")
    csv_path = os.path.join(output_dir, "summary.csv")
    write_text(md_path, "\n".join(lines))
    write_text(csv_path, _summary_csv(aggregated))
    return [md_path, csv_path]


def _set_key(group: Mapping) -> str:
    return f"{group['dataset']}/{group['model']}{group['suffix']}"


def _link_list(paths: Sequence[str]) -> str:
    return " ".join(f"[{os.path.splitext(p)[1].lstrip('.')}]({p})" for p in paths)


def _table_sort_key(entry: Mapping) -> tuple:
    return (
        _method_key(entry["method"]),
        _none_first(entry["rewind_step"]),
        -entry["density_target"],
        _ablation_key(entry["ablations"]),
    )


def _pivot_table(rows: Sequence[Mapping]) -> list[str]:
    densities = sorted({r["density_target"] for r in rows}, reverse=True)
    cells: dict[tuple, dict[float, str]] = {}
    for r in sorted(rows, key=_table_sort_key):
        key = (method_label(r["method"], r["rewind_step"]), r["ablations"])
        cells.setdefault(key, {})[r["density_target"]] = f"{100.0 * r['test_accuracy_mean']:.2f}"
    lines = [
        "Mean test accuracy (%) by fraction of weights remaining (%):",
        "",
        "| method | ablation | " + " | ".join(format_percent(d) for d in densities) + " |",
        "|---|---|" + "---:|" * len(densities),
    ]
    # Rows ordered by method then ablation, whatever density came first.
    for key in sorted(cells, key=lambda k: (_label_key(k[0], rows), _ablation_key(k[1]))):
        values = " | ".join(cells[key].get(d, "–") for d in densities)
        lines.append(f"| {key[0]} | {key[1]} | {values} |")
    return lines


def _label_key(label: str, rows: Sequence[Mapping]) -> tuple:
    for r in rows:
        if method_label(r["method"], r["rewind_step"]) == label:
            return (_method_key(r["method"]), _none_first(r["rewind_step"]))
    return (registry.sort_key(label), (False, 0))


def _full_table(rows: Sequence[Mapping]) -> list[str]:
    lines = [
        "| method | ablation | density (%) | actual density (%) | test accuracy (%) | n |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=_table_sort_key):
        actual = r["density_actual_mean"]
        lines.append(
            f"| {method_label(r['method'], r['rewind_step'])} | {r['ablations']} "
            f"| {format_percent(r['density_target'])} "
            f"| {'–' if actual is None else format_percent(actual)} "
            f"| {format_accuracy(r['test_accuracy_mean'], r['test_accuracy_std'])} | {r['n']} |"
        )
    return lines


_SUMMARY_COLUMNS = (
    *_GROUP_KEYS,
    "density_actual_mean",
    "n",
    "seeds",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_loss_mean",
    "test_loss_std",
)


def _csv_text(columns: Sequence[str], rows: Iterable[Mapping]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return out.getvalue()


def _summary_csv(aggregated: Sequence[Mapping]) -> str:
    rows = [dict(g, seeds=" ".join(str(s) for s in g["seeds"])) for g in aggregated]
    return _csv_text(_SUMMARY_COLUMNS, rows)


_LAYER_COLUMNS = (
    "run_dir",
    "dataset",
    "model",
    "method",
    "ablations",
    "density_target",
    "seed",
    "prune_step",
    "rewind_step",
    "layer_index",
    "layer",
    "density",
)


def _layer_csv(rows: Sequence[Mapping], runs: Mapping[str, dict | None]) -> str:
    records = []
    for row in rows:
        results = runs.get(row.get("run_dir") or "")
        for index, (layer, density) in enumerate((results or {}).get("layer_density", {}).items()):
            records.append(dict(row, layer_index=index, layer=layer, density=density))
    return _csv_text(_LAYER_COLUMNS, records)


def _check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = tuple(f.strip().lower().lstrip(".") for f in formats if f.strip())
    if not formats:
        raise ConfigError(f"no figure format given: use some of {', '.join(FORMATS)}")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown figure format {fmt!r}: use some of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def _layer_sets(
    rows: Sequence[Mapping], runs: Mapping[str, dict | None]
) -> dict[tuple, dict[float, dict[str, float]]]:
    """{(method, rewind_step): {density: layer_density of the lowest-seed un-ablated run}}."""
    sets: dict[tuple, dict[float, dict[str, float]]] = {}
    for entry in sorted(rows, key=_table_sort_key):
        if entry["method"] == DENSE or entry["ablations"] != "none":
            continue
        results = runs.get(entry["run_dirs"][0]) if entry["run_dirs"] else None
        layers = (results or {}).get("layer_density")
        if layers:
            key = (entry["method"], entry["rewind_step"])
            sets.setdefault(key, {})[entry["density_target"]] = dict(layers)
    return sets


def make_report(
    sweep_dir: str,
    output_dir: str | None = None,
    formats: Sequence[str] = ("png", "svg"),
) -> list[str]:
    """Writes the figures, `summary.md`, `summary.csv` and `layer_densities.csv` of a sweep.

    Args:
        sweep_dir: the sweep directory (`results.csv` and the run directories it lists).
        output_dir: where to write (default `<sweep_dir>/report`); created if missing.
        formats: figure formats, some of "png", "svg", "pdf" (or one comma-separated string).

    Returns:
        The paths written, figures first.

    Raises:
        DataError: `results.csv` is missing, empty or malformed (see `load_results`).
        ConfigError: an unknown figure format.
        OutputError: `output_dir` cannot be created or written.

    Example:
        >>> paths = make_report("sweeps/lenet", formats=("png",))
        >>> paths[-3]
        'sweeps/lenet/report/summary.md'
    """
    _need_matplotlib()
    formats = _check_formats(formats)
    rows = load_results(sweep_dir)
    output_dir = output_dir or os.path.join(sweep_dir, "report")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output directory {output_dir!r}: {error}") from error
    if not os.access(output_dir, os.W_OK):
        raise OutputError(f"the output directory {output_dir!r} is not writable")
    aggregated = aggregate(rows)
    runs = _read_runs(sweep_dir, dict.fromkeys(r["run_dir"] for r in rows if r.get("run_dir")))
    unreadable = [run_dir for run_dir, results in runs.items() if results is None]
    collapsed = {
        run_dir: list(results["collapsed_layers"])
        for run_dir, results in runs.items()
        if results and results.get("collapsed_layers")
    }
    for run_dir, layers in collapsed.items():
        logging.warning("layer collapse in %s: %s", run_dir, ", ".join(layers))

    written: list[str] = []
    figures: dict[str, dict[str, list[str]]] = {}
    layer_stems: dict[str, list[str]] = {}
    for group in figure_groups(aggregated):
        dataset, model, step = group["dataset"], group["model"], group["prune_step"]
        base = f"{_slug(dataset)}-{_slug(model)}"
        fig = plot_accuracy(group["rows"], dataset=dataset, model=model, prune_step=step)
        paths = _save(fig, os.path.join(output_dir, f"accuracy-{base}{group['suffix']}"), formats)
        written += paths
        links = figures.setdefault(_set_key(group), {"accuracy": paths})
        for (method, rewind), layer_densities in _layer_sets(group["rows"], runs).items():
            label = method_label(method, rewind)
            # References are pruned the same way in every step's set: one figure for all.
            suffix = "" if registry.is_reference(method) else group["suffix"]
            rewind_part = "" if rewind is None else f"-rewind{rewind}"
            stem = os.path.join(output_dir, f"layers-{base}{suffix}-{_slug(method)}{rewind_part}")
            if stem not in layer_stems:
                title = f"Per-layer density: {label}, {_figure_title(dataset, model, None)}"
                if suffix:
                    title += f", pruned at iteration {step}"
                fig = plot_layer_densities(layer_densities, method=label, title=title)
                layer_stems[stem] = _save(fig, stem, formats)
                written += layer_stems[stem]
            links[label] = layer_stems[stem]

    written += write_summary(
        aggregated,
        output_dir,
        figures=figures,
        collapsed=collapsed,
        unreadable=unreadable,
        sweep_dir=sweep_dir,
    )
    layer_csv = os.path.join(output_dir, "layer_densities.csv")
    write_text(layer_csv, _layer_csv(rows, runs))
    written.append(layer_csv)
    return written


class _ArgumentParser(argparse.ArgumentParser):
    """Reports bad arguments on one line, like every other error of the command."""

    def error(self, message: str) -> None:
        fail(PROGRAM, message)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m tfprune.report`."""
    parser = _ArgumentParser(
        prog="python -m tfprune.report",
        description="Figures and tables of a sweep directory (the output of tfprune.sweep).",
    )
    parser.add_argument("sweep_dir", help="the sweep directory holding results.csv")
    parser.add_argument("--output_dir", default=None, help="default: SWEEP_DIR/report")
    parser.add_argument(
        "--formats", default="png,svg", help="figure formats, comma-separated (png, svg, pdf)"
    )
    args = parser.parse_args(argv)
    try:
        written = make_report(args.sweep_dir, args.output_dir, args.formats)
    except TfpruneError as error:
        fail(PROGRAM, str(error))
    summary = next(p for p in written if p.endswith("summary.md"))
    print(f"wrote {len(written)} files; summary: {summary}")


if __name__ == "__main__":
    main(sys.argv[1:])
