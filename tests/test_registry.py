"""The method registry: one place knows every method, a method is one file, the allocation is a
setting of its own, and nothing else in tfprune lists method names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfprune
from tfprune import registry
from tfprune.errors import ConfigError
from tfprune.experiment import Experiment
from tfprune.layers import MaskedDense
from tfprune.pruning.layerwise import erk_counts

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfprune")
# Where method names may be written: the registry and the method files.
ALLOWED = (os.path.join(PACKAGE, "registry.py"), os.path.join(PACKAGE, "methods"))


def _method_names() -> set[str]:
    return set(registry.accepted_names())


def _listings(source: str, names: set[str]) -> list[str]:
    """Where `source` lists method names or treats one by name: a tuple, list, set or dict
    (keys) literal holding two of them, or a comparison (==, !=, in, not in) with one.
    Docstrings and messages are text, not listings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Compare):
            items = [node.left, *node.comparators]
            held = {i.value for i in items if isinstance(i, ast.Constant)} & names
            if held:
                found.append(f"line {node.lineno}: compares with {sorted(held)}")
            continue
        else:
            continue
        held = {i.value for i in items if isinstance(i, ast.Constant)} & names
        if len(held) >= 2:
            found.append(f"line {node.lineno}: lists {sorted(held)}")
    return found


def test_the_listing_check_finds_lists_and_comparisons():
    names = {"snip", "grasp", "lottery"}
    source = textwrap.dedent(
        """
        METHODS = ("snip", "grasp")
        STYLE = {"snip": 1, "lottery": 2}
        if method == "lottery":
            pass
        """
    )
    assert len(_listings(source, names)) == 3
    harmless = 'x = f"{method} at rate"\ncache = ("grasp", 1, 2)\n"""snip, grasp and lottery"""\n'
    assert _listings(harmless, names) == []


def test_no_module_outside_the_registry_lists_method_names():
    names = _method_names()
    offenders = []
    for root, _, files in os.walk(PACKAGE):
        for file in sorted(files):
            path = os.path.join(root, file)
            if not file.endswith(".py") or path.startswith(ALLOWED):
                continue
            with open(path) as f:
                offenders += [f"{path}: {hit}" for hit in _listings(f.read(), names)]
    assert offenders == [], "method names outside tfprune/registry.py and tfprune/methods/"


def test_every_file_in_methods_registers_its_method():
    files = sorted(
        f[:-3]
        for f in os.listdir(os.path.join(PACKAGE, "methods"))
        if f.endswith(".py") and f != "__init__.py"
    )
    assert files == sorted(m.name for m in registry.methods())
    for method in registry.methods():
        assert method.kind in registry.KINDS and method.style.color and method.summary


def test_a_method_is_one_new_file(tmp_path, monkeypatch):
    """A file dropped into the methods package is all a method needs: the experiment, the
    sweep's parser, pruning and the report all know it."""
    (tmp_path / "half_magnitude.py").write_text(
        textwrap.dedent(
            '''
            """`half_magnitude`: keep-score |w| / 2, an example."""

            import numpy as np

            from tfprune import registry


            class HalfMagnitude(registry.Scorer):
                def __init__(self, factor: float = 0.5):
                    self.factor = factor

                def __call__(self, model, weights, batches, rng):
                    return {p: self.factor * np.abs(w.kernel.numpy()) for p, w in weights.items()}


            registry.register(
                registry.Method(
                    name="half_magnitude",
                    kind=registry.AT_INIT,
                    scorer=HalfMagnitude,
                    summary="|w| / 2",
                    style=registry.Style("half_magnitude", "#5a3d8a", "<", 25),
                )
            )
            '''
        )
    )
    import tfprune.methods
    from tfprune import sweep

    registry.methods()  # the shipped methods, discovered already
    monkeypatch.setattr(tfprune.methods, "__path__", [*tfprune.methods.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    try:
        assert "half_magnitude" in registry.accepted_names()
        Experiment(method="half_magnitude", density=0.1, method_options={"factor": 2.0}).validate()
        assert sweep.parse_methods("snip,half_magnitude") == ["snip", "half_magnitude"]
        model = _mlp()
        masks = tfprune.prune(model, "half_magnitude", 0.1, factor=3.0)
        expected = tfprune.prune(_mlp(), "magnitude", 0.1)
        for path in masks:
            np.testing.assert_array_equal(masks[path], expected[path])
        assert registry.style("half_magnitude").color == "#5a3d8a"
        assert registry.sort_key("magnitude") < registry.sort_key("half_magnitude")
        assert registry.sort_key("half_magnitude") < registry.sort_key("snip")
    finally:
        sys.modules.pop("tfprune.methods.half_magnitude", None)


def _mlp(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((20,))
    h = MaskedDense(40, activation="relu", name="wide")(inputs)
    return keras.Model(inputs, MaskedDense(5, name="head")(h))


def _data(n: int = 30):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 20)).astype("float32"), rng.integers(0, 5, n)


@pytest.mark.parametrize(
    "method, allocation, expected",
    [
        ("snip", "global", ("snip", "global")),
        ("snip", "layer", ("snip", "layer")),
        ("snip", "uniform", ("snip", "layer")),
        ("grasp", "erk", ("grasp", "erk")),
        ("snip", "ratio_of:synflow", ("snip", "ratio_of:synflow")),
        ("uniform", "global", ("random", "layer")),
        ("erk", "global", ("random", "erk")),
        ("erk", "erk", ("random", "erk")),
        ("ratio_of:snip", "global", ("random", "ratio_of:snip")),
        ("lottery", "global", ("lottery", "global")),
    ],
)
def test_aliases_resolve_to_random_with_an_allocation(method, allocation, expected):
    assert registry.resolve(method, allocation) == expected


@pytest.mark.parametrize(
    "method, allocation, fragment",
    [
        # The scored methods, sorted: grasp and magnitude among them, whatever else is added.
        (
            "snipp",
            "global",
            r"unknown pruning method 'snipp'; choose one of (\w+, )*grasp, (\w+, )*magnitude",
        ),
        ("snip", "blocks", "unknown allocation 'blocks'"),
        ("snip", "ratio_of:lottery", "'ratio_of:lottery' needs a method scored at init"),
        ("erk", "layer", "method 'erk' is random pruning with allocation 'erk'"),
        ("lottery", "erk", "allocation 'erk' applies to methods scored at initialization"),
    ],
)
def test_bad_methods_and_allocations_are_refused_in_one_line(method, allocation, fragment):
    with pytest.raises(ConfigError, match=fragment) as refused:
        registry.resolve(method, allocation)
    assert "\n" not in str(refused.value)


def test_a_scored_method_with_erk_keeps_its_best_weights_in_erk_counts():
    data = _data()
    model = _mlp()
    scores = tfprune.score(model, "snip", data=data)
    masks = tfprune.prune(model, "snip", 0.1, data, allocation="erk")
    shapes = {path: scores[path].shape for path in scores}
    counts = erk_counts(shapes, 0.1)
    for path, mask in masks.items():
        assert int(mask.sum()) == counts[path]
        kept = np.sort(scores[path][mask > 0])
        dropped = scores[path][mask == 0]
        # Inside each layer the highest SNIP scores are the ones kept.
        assert kept.min() >= dropped.max()


def test_random_with_an_allocation_equals_its_alias():
    data = _data()
    for alias, allocation in (("erk", "erk"), ("uniform", "layer"), ("ratio_of:snip", None)):
        allocation = allocation or alias
        by_alias = tfprune.prune(_mlp(), alias, 0.2, data, seed=3)
        by_setting = tfprune.prune(_mlp(), "random", 0.2, data, seed=3, allocation=allocation)
        for path in by_alias:
            np.testing.assert_array_equal(by_alias[path], by_setting[path])


def test_experiment_takes_the_allocation_and_keeps_old_run_directories():
    from tfprune.experiment import config_dict, default_output_dir
    from tfprune.runner import semantic
    from tfprune.training import TrainConfig

    assert Experiment(method="snip", density=0.1, allocation="erk").resolved() == ("snip", "erk")
    assert Experiment(method="snip", density=0.1, scope="layer").resolved() == ("snip", "layer")
    assert Experiment(method="erk", density=0.1, scope="layer").resolved() == ("random", "erk")
    with pytest.raises(ConfigError, match="unknown allocation 'bogus'"):
        Experiment(method="snip", density=0.1, allocation="bogus").validate()
    # A configuration without the new setting computes what one with allocation=None does: a
    # run directory written before the setting existed is still the same run.
    experiment, training = Experiment(method="snip", density=0.1), TrainConfig()
    stored = config_dict(experiment, training)
    del stored["experiment"]["allocation"]
    assert semantic(stored) == semantic(config_dict(experiment, training))
    erk = Experiment(method="snip", density=0.1, allocation="erk")
    assert default_output_dir(erk, training) != default_output_dir(experiment, training)


def test_run_labels_name_the_allocation():
    assert registry.label("snip") == "snip"
    assert registry.label("random", "erk") == "erk"
    assert registry.label("random", "layer") == "uniform"
    assert registry.label("random", "ratio_of:grasp") == "ratio_of:grasp"
    assert registry.label("snip", "erk") == "snip (erk)"
    assert registry.label("erk", "erk") == "erk"  # results.json keeps the method as asked
    # The report draws a method's allocation variant in a colour of its own: the label's.
    assert registry.style("ratio_of:snip").color != registry.style("snip").color


def test_the_registry_and_the_results_schema_import_no_tensorflow():
    code = (
        "import sys\n"
        "from tfprune import registry, results\n"
        "registry.methods(); registry.style('ratio_of:snip'); results.COLUMNS\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('tensorflow', 'keras')))[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_method_has_its_own_colour_and_order():
    entries = [registry.get(name) for name in registry.names()]
    colours = [entry.style.color.lower() for entry in entries]
    assert len(set(colours)) == len(colours), sorted(colours)
    orders = [entry.style.order for entry in entries]
    assert len(set(orders)) == len(orders), sorted(orders)
