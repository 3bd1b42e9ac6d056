"""When the masks of pruning during training change, and by how much (SPEC §7).

Two schedules, pure functions of the iteration so that a resumed run repeats an uninterrupted
one: `CubicSchedule`, the density of gradual magnitude pruning (Zhu and Gupta, 2017), and
`DropSchedule`, the fraction that dynamic sparse training (SET, RigL) drops and regrows. A
method of kind `during_training` says which one it follows in its registry entry
(`settings["schedule"]`: `"cubic"` or `"drop_and_grow"`) and takes the schedule's options
(`OPTIONS`), whose defaults its entry gives.

Positions in the options are a float, the fraction of training (`0.75`: after 75% of the
iterations, rounded down), or a step position, `"500it"`, `"2ep"` or an int of iterations.

This module imports neither TensorFlow nor Keras, so that checking a configuration stays light.

Example:

>>> options = {"begin": 0.25, "end": 0.75, "every": 100, "scope": "global"}
>>> schedule = CubicSchedule.from_options(0.1, options, total_steps=1000, steps_per_epoch=100)
>>> schedule.steps()
[250, 350, 450, 550, 650, 750]
>>> schedule.density(250), schedule.density(750)
(1.0, 0.1)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

from tfprune import registry
from tfprune.errors import ConfigError
from tfprune.pruning.selection import SCOPES, check_density
from tfprune.steps import to_iterations

CUBIC = "cubic"
DROP_AND_GROW = "drop_and_grow"
SCHEDULES = (CUBIC, DROP_AND_GROW)

# How dynamic sparse training spreads its density over the layers at the start: the
# allocations `erk` and `layer` (also spelled `uniform`).
DISTRIBUTIONS = (registry.ERK, registry.LAYER)


def position(value: Any, total_steps: int, steps_per_epoch: int, what: str) -> int:
    """An option's position in iterations: a float is a fraction of training (rounded down),
    anything else a step position (`"500it"`, `"2ep"`, an int of iterations).

    Raises:
        ConfigError: for a fraction outside [0, 1], or a malformed position.

    Example:

    >>> position(0.75, 1000, 100, "end"), position("2ep", 1000, 100, "end")
    (750, 200)
    """
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"{what} must be a fraction of training in [0, 1] or a position like '500it', "
                f"got {value!r}"
            )
        return math.floor(value * total_steps)
    return to_iterations(value, steps_per_epoch, what)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{what} must be a positive integer (iterations), got {value!r}")
    return int(value)


def _check_positions(options: Mapping[str, Any], names: tuple[str, ...], method: str) -> None:
    """Checks the form of position options (before the training length is known)."""
    for name in names:
        position(options[name], 1, 1, f"{method} option {name}")


def _after_training_end(method: str, name: str, value: Any, step: int, total: int) -> ConfigError:
    return ConfigError(
        f"{method} option {name}={value!r} is iteration {step}, after the end of training "
        f"({total} iterations)"
    )


@dataclasses.dataclass(frozen=True)
class CubicSchedule:
    """Gradual magnitude pruning's density (Zhu and Gupta, 2017; SPEC §7).

    `d_t = d_f + (1 − d_f)(1 − (t − t_0) / (nΔt))³` at `t ∈ {t_0, t_0 + Δt, …, t_0 + nΔt}`,
    with `n = ⌊(end − t_0) / Δt⌋`: the density falls from 1 at `begin` to `final_density` at
    the last update, on or before `end`. With fewer than Δt iterations between `begin` and
    `end` (n = 0), the one update at `begin` prunes to `final_density` at once.

    Args:
        final_density: d_f.
        begin: t_0, in iterations.
        end: The last iteration an update may fall on.
        every: Δt, in iterations.
        scope: `"global"` (rank all weights together) or `"layer"` (each layer on its own).
    """

    final_density: float
    begin: int
    end: int
    every: int
    scope: str = "global"

    #: The options a method following this schedule takes (its registry entry gives the
    #: defaults).
    OPTIONS = ("begin", "end", "every", "scope")

    @staticmethod
    def check_options(options: Mapping[str, Any], method: str) -> None:
        """Raises ConfigError for an option value this schedule cannot take (the training
        length aside, which `from_options` checks)."""
        _check_positions(options, ("begin", "end"), method)
        _positive_int(options["every"], f"{method} option every")
        if options["scope"] not in SCOPES:
            raise ConfigError(
                f"{method} option scope must be one of {', '.join(SCOPES)}, got "
                f"{options['scope']!r}"
            )

    @classmethod
    def from_options(
        cls,
        final_density: float,
        options: Mapping[str, Any],
        total_steps: int,
        steps_per_epoch: int,
        method: str = "the method",
    ) -> CubicSchedule:
        """The schedule of a run of `total_steps` iterations.

        Raises:
            ConfigError: for a bad option, `end` before `begin` or after training's end.
        """
        cls.check_options(options, method)
        begin, end = (
            position(options[name], total_steps, steps_per_epoch, f"{method} option {name}")
            for name in ("begin", "end")
        )
        if end > total_steps:
            raise _after_training_end(method, "end", options["end"], end, total_steps)
        if end < begin:
            raise ConfigError(
                f"{method} option end={options['end']!r} (iteration {end}) is before begin="
                f"{options['begin']!r} (iteration {begin})"
            )
        return cls(
            check_density(final_density), begin, end, int(options["every"]), options["scope"]
        )

    @property
    def intervals(self) -> int:
        """n: the updates after the first."""
        return (self.end - self.begin) // self.every

    @property
    def last_step(self) -> int:
        """t_0 + nΔt: the update that reaches `final_density`; the mask is fixed from there."""
        return self.begin + self.intervals * self.every

    def steps(self) -> list[int]:
        """The iterations before which the masks are updated, in order."""
        return [self.begin + k * self.every for k in range(self.intervals + 1)]

    def density(self, step: int) -> float:
        """d_t at an update step `t` (`final_density` from the last update on)."""
        if not self.intervals or step >= self.last_step:
            return self.final_density
        progress = (step - self.begin) / (self.intervals * self.every)
        return self.final_density + (1.0 - self.final_density) * (1.0 - progress) ** 3


@dataclasses.dataclass(frozen=True)
class DropSchedule:
    """The fraction that dynamic sparse training drops and regrows (SET, RigL; SPEC §7).

    Every ΔT iterations before `end` (t = 0, ΔT, 2ΔT, … < T_end, the first at the first
    iteration as in RigL's code), each layer drops the fraction
    `f(t) = (α/2)(1 + cos(π t / T_end))` of its active weights (rounded down, as RigL's code
    does) and grows as many.

    Args:
        drop_fraction: α.
        every: ΔT, in iterations.
        end: T_end, in iterations.
        distribution: How the starting density is spread over the layers: `"erk"`, or
            `"uniform"` (`"layer"`): every layer at the density.
    """

    drop_fraction: float
    every: int
    end: int
    distribution: str = "erk"

    #: The options a method following this schedule takes (its registry entry gives the
    #: defaults).
    OPTIONS = ("drop_fraction", "every", "end", "distribution")

    @staticmethod
    def check_options(options: Mapping[str, Any], method: str) -> None:
        """Raises ConfigError for an option value this schedule cannot take (the training
        length aside, which `from_options` checks)."""
        alpha = options["drop_fraction"]
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, numbers.Real)
            or not 0.0 <= float(alpha) <= 1.0
        ):
            raise ConfigError(f"{method} option drop_fraction must be in [0, 1], got {alpha!r}")
        _positive_int(options["every"], f"{method} option every")
        _check_positions(options, ("end",), method)
        distribution = options["distribution"]
        try:
            allocation = (
                registry.check_allocation(distribution) if isinstance(distribution, str) else None
            )
        except ConfigError:
            allocation = None
        if allocation not in DISTRIBUTIONS:
            raise ConfigError(
                f"{method} option distribution must be erk or uniform (also spelled layer), "
                f"got {distribution!r}"
            )

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Any],
        total_steps: int,
        steps_per_epoch: int,
        method: str = "the method",
    ) -> DropSchedule:
        """The schedule of a run of `total_steps` iterations.

        Raises:
            ConfigError: for a bad option, or `end` after training's end.
        """
        cls.check_options(options, method)
        end = position(options["end"], total_steps, steps_per_epoch, f"{method} option end")
        if end > total_steps:
            raise _after_training_end(method, "end", options["end"], end, total_steps)
        return cls(
            float(options["drop_fraction"]), int(options["every"]), end, options["distribution"]
        )

    def steps(self) -> list[int]:
        """The iterations before which the masks are updated, in order."""
        return list(range(0, self.end, self.every))

    @property
    def last_step(self) -> int:
        """The last update (0 if there is none); the mask is fixed from there."""
        steps = self.steps()
        return steps[-1] if steps else 0

    def fraction(self, step: int) -> float:
        """f(t), the fraction of each layer's active weights replaced at iteration `t`."""
        return self.drop_fraction / 2 * (1.0 + math.cos(math.pi * step / self.end))

    @staticmethod
    def count(fraction: float, active: int) -> int:
        """How many of `active` weights are dropped (and grown): ⌊f · active⌋."""
        return math.floor(fraction * active)


def schedule_class(name: str) -> type[CubicSchedule] | type[DropSchedule]:
    """The schedule a method's `settings["schedule"]` names.

    Raises:
        ConfigError: for a name that is none of `SCHEDULES`.
    """
    classes = {CUBIC: CubicSchedule, DROP_AND_GROW: DropSchedule}
    if name not in classes:
        raise ConfigError(f"unknown mask schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return classes[name]


def resolve(
    schedule: str,
    density: float,
    options: Mapping[str, Any],
    total_steps: int,
    steps_per_epoch: int,
    method: str,
) -> CubicSchedule | DropSchedule:
    """The schedule named `schedule` for a run at `density` of `total_steps` iterations.

    Raises:
        ConfigError: for an option value that cannot be used.
    """
    cls = schedule_class(schedule)
    if cls is CubicSchedule:
        return CubicSchedule.from_options(density, options, total_steps, steps_per_epoch, method)
    return DropSchedule.from_options(options, total_steps, steps_per_epoch, method)
