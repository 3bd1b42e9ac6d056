"""The one registry of pruning methods: what every other module asks about a method.

Each method is registered once, by a file of its own in `tfprune/methods/`, with its kind, whether
it needs data, its default rounds, its options, the ablations it takes, and how the report draws
it. Nothing else in tfprune lists method names: it asks this module. The per-layer allocation
(`global`, `layer`, `erk`, `ratio_of:<method>`) is a setting of its own, not part of a method's
name; the old names `uniform`, `erk` and `ratio_of:<method>` stay accepted as aliases of
`random` with that allocation.

This module and the method files import neither TensorFlow nor Keras, so that planning a sweep
and drawing a report stay light; a scorer imports what it computes with when it is called.

Example:

>>> from tfprune import registry
>>> registry.get("snip").needs_data
True
>>> registry.resolve("erk", "global")
('random', 'erk')
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from tfprune.errors import ConfigError

# The kinds of method.
DENSE = "dense"  # no pruning
AT_INIT = "at_init"  # keep-scores at initialization or at a step t, then selection
AFTER_TRAINING = "after_training"  # prune a trained network (magnitude, lottery tickets)
DURING_TRAINING = "during_training"  # the training loop changes the masks as it goes
KINDS = (DENSE, AT_INIT, AFTER_TRAINING, DURING_TRAINING)

ABLATIONS = ("shuffle", "reinit", "invert")

# The per-layer allocations: how many weights each layer keeps.
GLOBAL = "global"  # rank every weight together (the paper's setting)
LAYER = "layer"  # every layer keeps the same fraction
ERK = "erk"  # Erdős–Rényi-Kernel densities (SPEC §3)
RATIO_OF = "ratio_of:"  # the per-layer densities another method chooses
ALLOCATIONS = (GLOBAL, LAYER, ERK, RATIO_OF + "<method>")
# Allocation spellings kept for compatibility: `scope="layer"` and the baseline `uniform`.
_ALLOCATION_SYNONYMS = {"uniform": LAYER}
# Method names of the layerwise baselines before the allocation was its own setting.
_ALLOCATION_METHODS = ("uniform", ERK)


@dataclasses.dataclass(frozen=True)
class Style:
    """How the report draws a method: legend label, colour (contrast >= 3 on white), marker and
    its place in legends and tables (lower first)."""

    label: str
    color: str
    marker: str
    order: int


@dataclasses.dataclass(frozen=True)
class Method:
    """Everything tfprune asks about a pruning method.

    Args:
        name: The registry name (`experiment.method`, `--methods`).
        kind: One of `KINDS`.
        style: How the report draws it.
        summary: One line: the keep-score or rule, and the paper it comes from.
        scorer: For `AT_INIT` methods, the `Scorer` class, or `"module:Class"` to import on
            first use (for implementations that need TensorFlow at import).
        needs_data: Whether scoring needs pruning batches.
        default_rounds: Rounds when none are asked for (iterative methods: more than 1).
        ablations: The ablations that apply.
        reference: Drawn in every panel of the report as a reference (dense, after training).
        options: `{option: default}` of the scorer, for a scorer named by its path (so that
            checking a configuration imports no implementation); read from the scorer's
            `__init__` otherwise.
        settings: Settings read by the code that runs the kind (after training: `scored_by`,
            `iterative`, `rewind_default`; `baseline`: random pruning, the floor the report
            draws in every panel and the method the allocation aliases name; `revives`: its
            pruned weights keep a score, so each round of a `prune` call ranks every weight
            alive when the call began and weights its earlier rounds pruned can come back).
    """

    name: str
    kind: str
    style: Style
    summary: str = ""
    scorer: type | str | None = None
    needs_data: bool = False
    default_rounds: int = 1
    ablations: tuple[str, ...] = ABLATIONS
    reference: bool = False
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] | None = None

    def scorer_class(self) -> type:
        """The scorer class (imported now if it was named by its path)."""
        if isinstance(self.scorer, str):
            module, _, attribute = self.scorer.partition(":")
            return getattr(importlib.import_module(module), attribute)
        if self.scorer is None:
            raise ConfigError(f"method {self.name!r} is not scored ({self.kind})")
        return self.scorer

    def option_defaults(self) -> dict[str, Any]:
        """`{option: default}`: the keyword arguments its scorer takes."""
        if self.options is not None:
            return dict(self.options)
        if self.scorer is None:
            return {}
        return scorer_options(self.scorer_class())


def scorer_options(cls: type) -> dict[str, Any]:
    """`{option: default}` of a scorer class: the keyword arguments of its `__init__`."""
    parameters = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


class Scorer:
    """Base class of the scorers (keep-scores at initialization or at a step).

    A subclass takes its options as keyword arguments of `__init__` and implements `__call__`.
    One instance serves one `prune`/`score` call, all its rounds included, so it may cache work
    (a network copy, a traced function) on `self`. Its `name` is set when it is registered.
    """

    name: ClassVar[str] = ""

    def __call__(self, model, weights, batches, rng) -> dict:
        """Returns `{path: keep-score}` for every path of `weights`.

        Args:
            model: The built Keras model.
            weights: `{kernel path: PrunableWeight}`.
            batches: The pruning batches `[(x, y), ...]`, or None for data-free methods.
            rng: The run's NumPy generator for seeded methods.

        Returns:
            `{path: array of the kernel's shape}`; higher means more worth keeping.
        """
        raise NotImplementedError


def check_ablations(ablations: str | Iterable[str] | None) -> tuple[str, ...]:
    """Returns the ablations as a tuple in canonical order (`ABLATIONS`), names checked.

    Accepts a sequence of names, one name, a comma-separated string, `None` or `"none"`.

    Raises:
        ConfigError: for an unknown or repeated name.
    """
    if ablations is None:
        return ()
    if isinstance(ablations, str):
        ablations = [a for a in ablations.replace("+", ",").split(",") if a.strip()]
    if not isinstance(ablations, Iterable):
        raise ConfigError(f"ablations must be a list of names from {', '.join(ABLATIONS)}")
    names = tuple(str(a).strip() for a in ablations if str(a).strip() != "none")
    for name in names:
        if name not in ABLATIONS:
            raise ConfigError(f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"an ablation is repeated in {list(names)}")
    return tuple(name for name in ABLATIONS if name in names)


_METHODS: dict[str, Method] = {}
_DISCOVERED = False


def register(method: Method) -> Method:
    """Adds `method` to the registry; returns it.

    Raises:
        ValueError: for an empty, taken or reserved name, or an unknown kind or ablation.
    """
    if not method.name or method.name in _METHODS or method.name.startswith(RATIO_OF):
        raise ValueError(f"method name {method.name!r} is empty, reserved or already registered")
    if method.name in _ALLOCATION_METHODS:
        raise ValueError(f"{method.name!r} names an allocation; choose another method name")
    if method.kind not in KINDS:
        raise ValueError(f"kind {method.kind!r} of {method.name!r} is not one of {KINDS}")
    if set(method.ablations) - set(ABLATIONS):
        raise ValueError(f"{method.name!r} lists unknown ablations {method.ablations}")
    if method.kind == AT_INIT and method.scorer is None:
        raise ValueError(f"{method.name!r} is scored at initialization but has no scorer")
    if isinstance(method.scorer, str) and method.options is None:
        raise ValueError(f"{method.name!r} names its scorer by path: give its options too")
    _METHODS[method.name] = method
    return method


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: registers a `Scorer` subclass as a method scored at initialization.

    The class gives `name`, and may give `needs_data` and `default_rounds`; the report draws it
    with a colour and marker of its own.
    """
    _discover()
    register(
        Method(
            name=cls.name,
            kind=AT_INIT,
            scorer=cls,
            needs_data=bool(getattr(cls, "needs_data", False)),
            default_rounds=int(getattr(cls, "default_rounds", 1)),
            style=Style(cls.name, "", "", 1000),
            summary=(inspect.getdoc(cls) or "").split("\n")[0],
        )
    )
    return cls


def _discover() -> None:
    """Imports every method file of `tfprune.methods` once, which registers the methods."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module("tfprune.methods")
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"tfprune.methods.{module.name}")


def methods(kinds: Iterable[str] = KINDS) -> list[Method]:
    """The registered methods of `kinds`, in report order (then by name)."""
    _discover()
    wanted = set(kinds)
    found = [m for m in _METHODS.values() if m.kind in wanted]
    return sorted(found, key=lambda m: (m.style.order, m.name))


def names(kinds: Iterable[str] = KINDS) -> list[str]:
    """The names of the registered methods of `kinds`, in report order."""
    return [m.name for m in methods(kinds)]


def allocation_aliases() -> list[str]:
    """The method names that stand for random pruning with an allocation: `uniform`, `erk`,
    `ratio_of:<method>` for every scored method."""
    return [*_ALLOCATION_METHODS, *(RATIO_OF + n for n in sorted(names((AT_INIT,))))]


def is_alias(method: str) -> bool:
    """Whether `method` is one of the allocation aliases (known or not: `ratio_of:bogus`)."""
    return isinstance(method, str) and (
        method in _ALLOCATION_METHODS or method.startswith(RATIO_OF)
    )


def accepted_names() -> list[str]:
    """Every name `experiment.method` accepts: the scored methods (sorted), the allocation
    aliases, then the methods of the other kinds."""
    return [
        *sorted(names((AT_INIT,))),
        *allocation_aliases(),
        *names((AFTER_TRAINING, DURING_TRAINING)),
        *names((DENSE,)),
    ]


def listing(accepted: Iterable[str]) -> str:
    """`accepted` as an error message lists them, the `ratio_of:` aliases as one
    `ratio_of:<method>`."""
    shown: list[str] = []
    for name in accepted:
        entry = RATIO_OF + "<method>" if name.startswith(RATIO_OF) else name
        if entry not in shown:
            shown.append(entry)
    return ", ".join(shown)


def get(name: str) -> Method:
    """The method registered as `name`.

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    _discover()
    if not isinstance(name, str) or name not in _METHODS:
        raise ConfigError(
            f"unknown pruning method {name!r}; choose one of {listing(accepted_names())}"
        )
    return _METHODS[name]


def find(name: str) -> Method | None:
    """The method registered as `name`, or None."""
    _discover()
    return _METHODS.get(name)


def resolve(method: str, allocation: str = GLOBAL) -> tuple[str, str]:
    """`(method, allocation)` with the aliases resolved and both checked.

    `uniform`, `erk` and `ratio_of:<m>` as a method are `random` with that allocation
    (`uniform` is the allocation `layer`).

    Raises:
        ConfigError: for an unknown method or allocation, or an alias combined with another
            allocation than `global`.

    Example:

    >>> resolve("ratio_of:snip")
    ('random', 'ratio_of:snip')
    """
    allocation = check_allocation(allocation)
    if is_alias(method):
        implied = check_allocation(method)
        if allocation not in (GLOBAL, implied):
            raise ConfigError(
                f"method {method!r} is random pruning with allocation {implied!r}, which "
                f"contradicts allocation {allocation!r}"
            )
        return baseline().name, implied
    entry = get(method)
    if allocation != GLOBAL and entry.kind != AT_INIT:
        raise ConfigError(
            f"allocation {allocation!r} applies to methods scored at initialization, not to "
            f"{method} ({entry.kind})"
        )
    return entry.name, allocation


def dense() -> Method:
    """The method that prunes nothing (kind `DENSE`)."""
    (entry,) = methods((DENSE,))
    return entry


def baseline() -> Method:
    """The method that the allocation aliases name (random pruning): the one registered with
    `settings={"baseline": True}`."""
    for entry in methods((AT_INIT,)):
        if entry.settings.get("baseline"):
            return entry
    raise ConfigError("no method is registered as the allocation baseline (random pruning)")


def check_allocation(allocation: str) -> str:
    """Returns `allocation` in its canonical spelling after checking it.

    Raises:
        ConfigError: for an unknown allocation, or `ratio_of:` without a scored method.
    """
    allocation = _ALLOCATION_SYNONYMS.get(allocation, allocation)
    if allocation in (GLOBAL, LAYER, ERK):
        return allocation
    if isinstance(allocation, str) and allocation.startswith(RATIO_OF):
        inner = allocation[len(RATIO_OF) :]
        inner_entry = find(inner)
        if inner_entry is None or inner_entry.kind != AT_INIT:
            raise ConfigError(
                f"{allocation!r} needs a method scored at initialization after 'ratio_of:', "
                f"one of {', '.join(names((AT_INIT,)))}"
            )
        return allocation
    raise ConfigError(
        f"unknown allocation {allocation!r}; choose one of {', '.join(ALLOCATIONS)} "
        "(or uniform, the same as layer)"
    )


def check_options(method: str, options: Mapping[str, Any], shown: str | None = None) -> dict:
    """Returns `options` after checking that `method` takes every one of them.

    Args:
        method: A registered method.
        options: `{option: value}`.
        shown: The name the user gave, for the message (an alias of `method`).

    Raises:
        ConfigError: naming the first option it does not take and the ones it takes.
    """
    entry = get(method)
    accepted = entry.option_defaults()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ConfigError(
            f"method {shown or method!r} takes no option {unknown[0]!r} (its options: {allowed})"
        )
    return dict(options)


def needs_data(method: str, allocation: str = GLOBAL) -> bool:
    """Whether a resolved `(method, allocation)` needs pruning data: its keep-scores, or the
    per-layer densities its allocation copies from another method."""
    copied = allocation.startswith(RATIO_OF)
    inner = get(allocation[len(RATIO_OF) :]) if copied else None
    return get(method).needs_data or bool(inner and inner.needs_data)


def label(method: str, allocation: str = GLOBAL) -> str:
    """The name of a run's method in legends and tables: the method, or for random pruning
    with another allocation, the allocation (`erk`, `uniform`, `ratio_of:snip`), as the
    layerwise baselines were always named (and an alias stays itself); a scored method with
    another allocation is `snip (erk)`."""
    allocation = _ALLOCATION_SYNONYMS.get(allocation, allocation)
    if allocation == GLOBAL or is_alias(method):
        return method
    if method == baseline().name:
        return "uniform" if allocation == LAYER else allocation
    return f"{method} ({allocation})"



# How the report draws the per-layer baselines (random pruning with another allocation), and
# methods that registered no style of their own.
_ALLOCATION_STYLES = {
    "uniform": Style("uniform", "#9467bd", "P", 60),
    ERK: Style("erk", "#8c564b", "X", 70),
}
_FALLBACK_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
_FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "<", ">")
_UNKNOWN_ORDER = 10**6


def style(name: str) -> Style:
    """How the report draws a run labelled `name` (see `label`): a registered method's style;
    `ratio_of:<method>` a darker shade of its method's colour; anything else (a method of an
    old results.csv, a scorer registered without a style) a colour and marker derived from its
    name, the same in every figure."""
    entry = find(name)
    if entry is not None and entry.style.color:
        return entry.style
    if name in _ALLOCATION_STYLES:
        return _ALLOCATION_STYLES[name]
    if name.startswith(RATIO_OF):
        inner = style(name[len(RATIO_OF) :])
        return Style(name, _darker(inner.color), "o", _ALLOCATION_STYLES[ERK].order)
    digest = zlib.crc32(name.encode())
    return Style(
        name,
        _FALLBACK_COLORS[digest % len(_FALLBACK_COLORS)],
        _FALLBACK_MARKERS[digest % len(_FALLBACK_MARKERS)],
        entry.style.order if entry is not None else _UNKNOWN_ORDER,
    )


def sort_key(name: str) -> tuple:
    """Where a run labelled `name` goes in legends and tables: by the methods' order,
    `ratio_of:<method>` right after `erk` in the order of the methods it copies, methods the
    registry does not know last, by name."""
    if name.startswith(RATIO_OF):
        return (_ALLOCATION_STYLES[ERK].order, 1, sort_key(name[len(RATIO_OF) :]))
    order = style(name).order
    return (order, 0, (name,) if order == _UNKNOWN_ORDER else ())


def is_reference(name: str) -> bool:
    """Whether the report draws runs labelled `name` in every panel (dense, after training)."""
    entry = find(name)
    return entry is not None and entry.reference


def _darker(color: str, factor: float = 0.6) -> str:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(factor * c):02x}" for c in (red, green, blue))
