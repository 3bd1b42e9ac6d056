"""The README states the defaults the public functions have."""

from __future__ import annotations

import ast
import inspect
import os
import re

import pytest

import tfprune
from tfprune import registry
from tfprune.pruning.scorers import scorer_names

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
# A signature written out in the README: `tfprune.name(..., *, key=value, ...)`.
_SIGNATURE = re.compile(r"`tfprune\.(\w+)\(([^`]*\*,[^`]*)\)`")


def _signatures() -> list[tuple[str, dict[str, object]]]:
    with open(README) as f:
        text = f.read()
    found = []
    for name, params in _SIGNATURE.findall(text):
        defaults = {}
        for part in params.split(","):
            key, sep, value = part.strip().partition("=")
            if sep:
                defaults[key.strip()] = ast.literal_eval(value.strip())
        found.append((name, defaults))
    return found


def test_the_readme_writes_out_signatures():
    assert "prune" in [name for name, _ in _signatures()]


@pytest.mark.parametrize("name, defaults", _signatures(), ids=lambda v: str(v)[:40])
def test_readme_signature_defaults_are_the_functions_defaults(name, defaults):
    parameters = inspect.signature(getattr(tfprune, name)).parameters
    for key, value in defaults.items():
        assert parameters[key].default == value, f"tfprune.{name}: README says {key}={value!r}"


def test_readme_default_rounds_are_the_methods_own():
    with open(README) as f:
        text = " ".join(f.read().split())
    # "(100 for `synflow`, 20 for `ntk_sap` and `x`, 1 for the others)"
    stated = re.search(r"own number of rounds \(([^)]*), (\d+) for the others\)", text)
    assert stated, "the README no longer states the methods' default rounds"
    rounds = {name: registry.get(name).default_rounds for name in scorer_names()}
    for count, names in re.findall(r"(\d+) for ((?:`\w+`(?:, | and )?)+)", stated.group(1)):
        for name in re.findall(r"`(\w+)`", names):
            assert rounds.pop(name) == int(count), name
    assert set(rounds.values()) == {int(stated.group(2))}
