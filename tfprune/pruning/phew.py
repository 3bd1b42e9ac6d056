"""`phew` (Patil and Dovrolis, ICML 2021): Paths with Higher Edge Weights, SPEC §7.

PHEW builds a sparse network without data from random walks over the initial weights: each
walk crosses the network from an input unit to an output unit (or back), each step taking one
of the current unit's connections with probability proportional to |θ|, and the connections
walked are kept until the budget is met. This module follows the authors' code
(github.com/ShreyasMalakarjunPatil/PHEW, `phew_masks`) where it decides:

- **Seeds and directions.** Walks alternate: forward from the input units of the first
  prunable layer, taken in turn (0, 1, 2, ..., then again from 0), then backward from the output
  units of the last one, in turn. A forward step from unit i of a layer picks one of its
  outgoing connections with probability |θ ⊙ c| / Σ |θ ⊙ c| over them (c the mask: pruned
  weights are never walked); a backward step from output unit o picks one of its incoming
  connections alike.
- **Convolutions.** Units are channels. The reference code first draws the output channel with
  probability proportional to the kernel's L1 norm Σ_positions |θ[., i, o]|, then the kernel
  position proportional to |θ| inside that kernel, which is drawing the weight proportional to
  |θ| among all of channel i's weights, as done here. Between layers a unit stays a channel
  through BatchNorm, activations, pooling and additions; where a convolution's output is
  flattened into a Dense layer, a forward walk goes from channel c to one of c's features drawn
  uniformly, a backward walk from a feature to its channel (the reference code's
  `conv_to_linear_unit`).
- **Branches.** Where a tensor feeds several prunable layers on parallel branches (the 3x3
  convolution of a ResNet block and its 1x1 shortcut convolution), the walk takes one of them
  uniformly; an identity shortcut has no weight and is never taken, so a walk goes through the
  block's convolutions. Formally, the layers after a layer are the prunable layers its output
  reaches through non-prunable layers, minus those reachable through another of them (and
  mirrored for the layers before). The reference code hard-codes this for its ResNets, by the
  layers' order: half of the walks through a downsampling block take its shortcut. (Its
  forward walks decide one layer early and so also skip the convolution before such a block;
  that is not reproduced.)
- **Budget.** The reference code walks until the number of distinct connections walked reaches
  the budget, over all layers (each layer keeps what the walks give it) and completes its last
  walk, a few connections over. Here the walks stop at the connection that meets the budget,
  `round(d · N)` (`tfprune.pruning.api.Budget`), mid-walk if need be, so that exactly the
  walked connections are kept; a connection walked again adds nothing. Every kept connection
  lies on a walk from an input or an output, so every unit with a kept connection on one side
  has one on the other, but for at most the unit where the last walk stopped. With an
  allocation that fixes each layer's count (`layer`, `erk`, `ratio_of:<method>`) each layer
  keeps the first connections its walks cross up to its count, and walks go on until every
  layer has it (a walk still crosses a full layer, keeping nothing there); a layer that keeps
  every weight left needs no walk. With `min_layer_density` in global selection, walks go on
  past the budget until every layer has its floor, only layers below it keeping what they
  cross, and selection keeps the floors and the most visited of the rest.
- **Keep-score.** The number of times the walks crossed each kept connection, 0 for every
  other: selection's top `round(d · N)` is then exactly the walked set. `tfprune.score`, which
  knows no budget, returns the expected number of crossings of each connection by one forward
  and one backward walk (computed exactly, without sampling).

Every random draw comes from the generator `prune` passes (the run's "scores" stream), so the
walks are reproducible for a seed. The model is only read. PHEW prunes in one shot, as in the
paper; with more rounds each round walks the network the previous one pruned.

PHEW walks functional and Sequential models built from Dense and (ungrouped) Conv layers,
joined by BatchNormalization, activations, dropout, padding, pooling, flattening and merges
such as `Add` (as the paper's MLPs, VGGs and ResNets are; anything may come before the first
prunable layer); other models raise `ModelError`.
A connection no walk can reach (zero weights, or units cut off by earlier pruning) is never
kept while walked connections are left; when the walks cannot meet the budget (it asks for
nearly every connection, or more than the walks reach) within `MAX_WALKS_PER_WEIGHT` walks per
prunable weight, the rest of the budget goes to the unwalked connections most likely to be
walked next, with a warning.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from absl import logging

from tfprune._keras_compat import is_functional
from tfprune.errors import ConfigError, ModelError
from tfprune.layers import MaskedConv, MaskedDense
from tfprune.registry import Scorer

#: The walks give up on meeting the budget after this many walks (forward and backward) per
#: prunable weight; the rest of the budget then goes by expected visits.
MAX_WALKS_PER_WEIGHT = 16
_FIRST_BATCH = 64  # walk pairs in the first batch
_MAX_BATCH = 2**16  # walk pairs in the largest batch

# Layers a walk goes through with its channels unchanged.
_CHANNELWISE = (
    keras.layers.InputLayer,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Normalization,
    keras.layers.Rescaling,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
# Layers that change the spatial axes only (they say where the channels are).
_SPATIAL = (
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
)
_GLOBAL_POOLING = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)


class PhewScorer(Scorer):
    """`phew`: keep the connections of random walks biased by |θ|, until the budget is met.

    The keep-score of a connection is the number of times the walks crossed it, 0 for the
    connections not kept, so selection keeps exactly the walked ones (see the module
    docstring for the walks, the branches and the budget). Without a budget (`tfprune.score`)
    it is the expected number of crossings by one forward and one backward walk.

    Attributes:
        budget: The round's `tfprune.pruning.api.Budget`, set by `prune` before each round;
            None under `score`.

    Example:

    >>> masks = tfprune.prune(model, "phew", 0.05, seed=1)
    """

    budget = None

    def __init__(self):
        self._graph = None

    def __call__(self, model, weights, batches, rng):
        if self._graph is None or self._graph.model is not model:
            self._graph = _Graph(model, weights)
        tables = _Tables(self._graph, weights)
        expected = tables.expected_visits()
        if self.budget is None:
            counts = expected
        else:
            counts = _walk_to_budget(self._graph, tables, expected, self.budget, rng)
        return self._graph.split(counts)


# ---------------------------------------------------------------------------------------------
# The graph of prunable layers.


class _Link:
    """From layer `source`'s output units to layer `target`'s input units.

    `features` is None when the units are the same (a channel stays a channel); for a
    flattened convolution output it is `(channels, positions)`: the features of channel c are
    `features[c]`, and `channel_of[f]` is the channel of feature f.
    """

    def __init__(self, source: int, target: int, features: np.ndarray | None):
        self.source, self.target, self.features = source, target, features
        self.channel_of = None
        if features is not None:
            channels, positions = features.shape
            self.channel_of = np.empty(channels * positions, dtype=np.int64)
            self.channel_of[features.ravel()] = np.repeat(np.arange(channels), positions)


@dataclasses.dataclass(frozen=True)
class _Units:
    """Where the units of the layer a walk comes from are in a tensor: its shape without the
    batch axis and the channel axis, or, once flattened, the feature table of each channel."""

    shape: tuple
    axis: int | None
    features: np.ndarray | None = None


class _Graph:
    """The prunable layers of `model` as PHEW walks them.

    Attributes:
        model: The model.
        paths: The kernel paths, in `weights` order; layer i is `paths[i]`.
        shapes: Each kernel's shape.
        offsets: Where each kernel starts in the flat array of all connections.
        following, preceding: For each layer, the `_Link`s a forward (backward) walk takes
            next, one drawn uniformly.
        entry, exit: The layer forward (backward) walks start from.
    """

    def __init__(self, model: keras.Model, weights):
        self.model = model
        self.paths = list(weights)
        self.shapes = [tuple(weights[p].kernel.shape) for p in self.paths]
        sizes = [math.prod(shape) for shape in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        layers = {}
        for index, path in enumerate(self.paths):
            _check_layer(weights[path].layer, path, weights[path].kernel)
            layers[id(weights[path].layer)] = index
        operations = _operations(model)
        listed = {id(operation) for operation in operations}
        for path in self.paths:
            if id(weights[path].layer) not in listed:
                raise ModelError(
                    f"phew follows the layers of a flat model; {path} lies inside a nested "
                    "model or layer"
                )
        consumers = _consumers(model, operations)
        reached = [
            _reached(layer.output, _output_units(layer), consumers, layers)
            for layer in (weights[p].layer for p in self.paths)
        ]
        entries = {}
        for tensor in model.inputs:
            entries.update(_reached(tensor, None, consumers, layers))
        self.order = _topological(reached, len(self.paths))
        self._link(reached, entries)

    def _link(self, reached: list[dict], entries: dict) -> None:
        count = len(self.paths)
        below = [set() for _ in range(count)]  # the layers each layer's output leads to
        for index in self.order[::-1]:
            for target in reached[index]:
                below[index] |= {target} | below[target]

        def nearest(candidates) -> list[int]:
            return [c for c in candidates if not any(c in below[o] for o in candidates if o != c)]

        def farthest(candidates) -> list[int]:
            return [c for c in candidates if not any(o in below[c] for o in candidates if o != c)]

        self.following = [
            [_Link(i, t, reached[i][t]) for t in nearest(list(reached[i]))] for i in range(count)
        ]
        self.preceding = []
        for target in range(count):
            sources = [i for i in range(count) if target in reached[i]]
            self.preceding.append([_Link(s, target, reached[s][target]) for s in farthest(sources)])
        starts = nearest(sorted(entries))
        ends = [i for i in range(count) if not self.following[i]]
        if len(starts) != 1 or len(ends) != 1:
            names = [self.paths[i] for i in (starts if len(starts) != 1 else ends)]
            which = "input" if len(starts) != 1 else "output"
            raise ModelError(
                f"phew walks from one {which} layer, and the model has {len(names)}: "
                f"{', '.join(names) or 'none'}"
            )
        self.entry, self.exit = starts[0], ends[0]

    def layer_of(self, ids: np.ndarray) -> np.ndarray:
        """The layer of each flat connection id."""
        return np.searchsorted(self.offsets, ids, side="right") - 1

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """`{path: float64 array of the kernel's shape}` from the flat array of connections."""
        parts = np.split(np.asarray(flat, dtype=np.float64), self.offsets[1:-1])
        return {
            path: part.reshape(shape)
            for path, shape, part in zip(self.paths, self.shapes, parts, strict=True)
        }


def _check_layer(layer, path: str, kernel) -> None:
    if not isinstance(layer, (MaskedDense, MaskedConv)):
        raise ModelError(
            f"phew walks Dense and Conv kernels only; {path} belongs to "
            f"{type(layer).__name__} {layer.name!r}"
        )
    if kernel is not layer.kernel:
        raise ModelError(f"phew walks the kernel of {layer.name!r}, not {path}")
    if isinstance(layer, MaskedConv) and layer.groups != 1:
        raise ModelError(
            f"phew walks ungrouped convolutions; {layer.name!r} has groups={layer.groups}"
        )


def _operations(model: keras.Model) -> list:
    if is_functional(model):
        return list(model.operations)
    if isinstance(model, keras.Sequential):
        try:
            model.inputs  # noqa: B018  raises for a Sequential model that was never built
        except (AttributeError, ValueError) as error:
            raise ModelError(f"phew walks a built model; build {model.name!r} first") from error
        return list(model.layers)
    raise ModelError(
        f"phew follows the layers of a functional or Sequential model; {model.name!r} "
        f"({type(model).__name__}) is subclassed"
    )


def _consumers(model: keras.Model, operations: list) -> dict[int, list]:
    """`{id(tensor): [operations reading it]}`, checking that every tensor read is a model
    input or the output of an operation (it is not where a layer is called twice)."""
    consumers, produced = {}, {id(t) for t in model.inputs}
    for operation in operations:
        produced.update(id(t) for t in keras.tree.flatten(operation.output))
        for tensor in keras.tree.flatten(operation.input):
            consumers.setdefault(id(tensor), []).append(operation)
    read = [id(t) for op in operations for t in keras.tree.flatten(op.input)]
    if any(t not in produced for t in read) or any(id(t) not in produced for t in model.outputs):
        raise ModelError(
            f"phew follows each layer of {model.name!r} once; a layer called at several "
            "places (a shared layer) cannot be walked"
        )
    return consumers


def _output_units(layer) -> _Units:
    shape = tuple(layer.output.shape[1:])
    first = isinstance(layer, MaskedConv) and layer.data_format == "channels_first"
    return _Units(shape, 0 if first else len(shape) - 1)


def _reached(tensor, units: _Units | None, consumers: dict, layers: dict) -> dict:
    """`{layer index: features or None}`: the prunable layers `tensor` reaches through
    non-prunable layers, with how the units arrive (`_Link.features`). `units` None follows
    a model input, whose units need no tracking."""
    found, seen, stack = {}, set(), [(tensor, units)]
    while stack:
        tensor, units = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        for operation in consumers.get(id(tensor), []):
            if id(operation) in layers:
                found[layers[id(operation)]] = _arrival(units, operation)
            else:
                stack.append((operation.output, _through(operation, units)))
    return found


def _through(operation, units: _Units | None) -> _Units | None:
    """Where the units are in `operation`'s output (None before the first prunable layer,
    whose input units are where forward walks start, whatever comes before them)."""
    if units is None:
        return None
    if not isinstance(
        operation, (*_CHANNELWISE, *_SPATIAL, *_GLOBAL_POOLING, keras.layers.Flatten)
    ):
        raise ModelError(
            f"phew cannot walk through {type(operation).__name__} {operation.name!r}; it "
            "walks Dense and Conv layers joined by normalisation, activations, dropout, "
            "padding, pooling, flattening and merges such as Add"
        )
    shape = tuple(operation.output.shape[1:])
    if isinstance(operation, keras.layers.Flatten):
        return units if units.axis is None else _flattened(units, operation, shape)
    if isinstance(operation, _GLOBAL_POOLING):
        _check_channel_axis(operation, units)
        return units if operation.keepdims else _Units(shape, 0)
    if isinstance(operation, _SPATIAL):
        _check_channel_axis(operation, units)
    if units.axis is None:
        if shape != units.shape:
            raise ModelError(f"phew cannot follow the features through {operation.name!r}")
        return units
    if len(shape) != len(units.shape) or shape[units.axis] != units.shape[units.axis]:
        raise ModelError(f"phew cannot follow the channels through {operation.name!r}")
    return _Units(shape, units.axis)


def _check_channel_axis(operation, units: _Units) -> None:
    data_format = getattr(operation, "data_format", "channels_last")  # 1D layers may have none
    last = data_format == "channels_last"
    if units.axis is None or units.axis != (len(units.shape) - 1 if last else 0):
        raise ModelError(
            f"phew cannot follow the channels through {operation.name!r}: its data_format "
            f"{data_format!r} is not the one of the layer before"
        )


def _flattened(units: _Units, flatten, shape) -> _Units:
    """The features of each channel after `flatten` (which moves a channels-first axis last
    before flattening, as Keras' Flatten does)."""
    order = list(range(len(units.shape)))
    if flatten.data_format == "channels_first" and len(order) > 1:
        order = order[1:] + order[:1]
    index = np.arange(math.prod(units.shape)).reshape([units.shape[k] for k in order])
    channels = units.shape[units.axis]
    features = np.moveaxis(index, order.index(units.axis), 0).reshape(channels, -1)
    return _Units(shape, None, features)


def _arrival(units: _Units | None, layer) -> np.ndarray | None:
    """How the units arrive at `layer`'s input units: None when they are the same units,
    else the feature table of each channel (see `_Link`)."""
    if units is None:
        return None
    rank = len(layer.input.shape) - 1
    channels_first = isinstance(layer, MaskedConv) and layer.data_format == "channels_first"
    axis = 0 if channels_first else rank - 1
    if units.axis is None and rank == 1:
        features = units.features
        identity = features.shape[1] == 1 and np.array_equal(
            features[:, 0], np.arange(len(features))
        )
        return None if identity else features
    if units.axis != axis:
        raise ModelError(f"phew cannot follow the channels into {layer.name!r}")
    return None


def _topological(reached: list[dict], count: int) -> list[int]:
    order, state = [], [0] * count  # 0 new, 1 open, 2 done

    def visit(index):
        stack = [(index, iter(reached[index]))]
        state[index] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(reached[child])))

    for index in range(count):
        if state[index] == 0:
            visit(index)
    return order[::-1]


# ---------------------------------------------------------------------------------------------
# Transition probabilities.


class _Sampler:
    """Draws, for each of some rows of a nonnegative matrix, a column with probability
    proportional to the row's entries (never a zero entry)."""

    def __init__(self, matrix: np.ndarray):
        rows, self.columns = matrix.shape
        cumulative = np.cumsum(matrix, axis=1)
        self.totals = cumulative[:, -1] if self.columns else np.zeros(rows)
        self.live = self.totals > 0
        scale = np.where(self.live, self.totals, 1.0)
        # Row r's cumulative fractions shifted by r, in one increasing array: a zero entry
        # repeats the value before it exactly, so no draw lands on it.
        self._cdf = (cumulative / scale[:, None] + np.arange(rows)[:, None]).ravel()
        self._last = self.columns - 1 - np.argmax(matrix[:, ::-1] > 0, axis=1)

    def sample(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One column per entry of `rows` (live rows only)."""
        targets = rows + rng.random(len(rows))
        flat = np.searchsorted(self._cdf, targets, side="right")
        return np.minimum(flat - rows * self.columns, self._last[rows])


class _Tables:
    """The forward and backward samplers of each layer, from |θ ⊙ c| of the current kernels
    and masks, and the expected visits they give."""

    def __init__(self, graph: _Graph, weights):
        self.graph = graph
        self.forward, self.backward, self.magnitudes, self.alive = [], [], [], []
        for path, shape in zip(graph.paths, graph.shapes, strict=True):
            kernel, mask = weights[path].kernel.numpy(), weights[path].mask.numpy()
            magnitude = np.abs(np.float64(kernel) * np.float64(mask))
            positions, units_in, units_out = math.prod(shape[:-2]), shape[-2], shape[-1]
            cube = magnitude.reshape(positions, units_in, units_out)
            self.magnitudes.append(cube)
            self.alive.append(mask.ravel() > 0)
            self.forward.append(
                _Sampler(cube.transpose(1, 0, 2).reshape(units_in, positions * units_out))
            )
            self.backward.append(
                _Sampler(cube.transpose(2, 0, 1).reshape(units_out, positions * units_in))
            )

    def expected_visits(self) -> np.ndarray:
        """The expected number of times one forward walk and one backward walk (from a
        uniformly drawn seed, as the round-robin seeds are over a cycle) cross each
        connection, flat."""
        graph, count, order = self.graph, len(self.graph.paths), self.graph.order
        visits = [np.zeros_like(cube) for cube in self.magnitudes]
        arriving = [None] * count
        units = self.magnitudes[graph.entry].shape[1]
        arriving[graph.entry] = np.full(units, 1.0 / units)
        for index in order:
            mass = arriving[index]
            if mass is None:
                continue
            cube, totals = self.magnitudes[index], self.forward[index].totals
            share = np.divide(mass, totals, out=np.zeros_like(mass), where=totals > 0)
            flow = cube * share[None, :, None]
            visits[index] += flow
            leaving, links = flow.sum(axis=(0, 1)), graph.following[index]
            for link in links:
                part = leaving / len(links)
                if link.features is not None:
                    part = _spread(part, link.features)
                target = arriving[link.target]
                arriving[link.target] = part if target is None else target + part
        arriving = [None] * count
        units = self.magnitudes[graph.exit].shape[2]
        arriving[graph.exit] = np.full(units, 1.0 / units)
        for index in order[::-1]:
            mass = arriving[index]
            if mass is None:
                continue
            cube, totals = self.magnitudes[index], self.backward[index].totals
            share = np.divide(mass, totals, out=np.zeros_like(mass), where=totals > 0)
            flow = cube * share[None, None, :]
            visits[index] += flow
            leaving, links = flow.sum(axis=(0, 2)), graph.preceding[index]
            for link in links:
                part = leaving / len(links)
                if link.features is not None:
                    part = np.bincount(link.channel_of, weights=part, minlength=len(link.features))
                source = arriving[link.source]
                arriving[link.source] = part if source is None else source + part
        return np.concatenate([v.ravel() for v in visits])


def _spread(mass: np.ndarray, features: np.ndarray) -> np.ndarray:
    """A channel's mass spread evenly over its features."""
    spread = np.zeros(features.size)
    spread[features] = (mass / features.shape[1])[:, None]
    return spread


# ---------------------------------------------------------------------------------------------
# Walks.


def walk_pairs(
    graph: _Graph, tables: _Tables, start: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """The connections crossed by walk pairs `start` to `start + count - 1`, in walk order.

    Pair k is the forward walk from input unit k mod n_in and then the backward walk from
    output unit k mod n_out; each walk lists its connections in the order it crosses them.

    Returns:
        The flat ids of the connections crossed, walk after walk (int64).
    """
    pairs = np.arange(start, start + count)
    units_in = tables.magnitudes[graph.entry].shape[1]
    units_out = tables.magnitudes[graph.exit].shape[2]
    forward = _walks(graph, tables, graph.entry, pairs % units_in, True, rng)
    backward = _walks(graph, tables, graph.exit, pairs % units_out, False, rng)
    walks = np.concatenate([2 * forward[0], 2 * backward[0] + 1])
    steps = np.concatenate([forward[1], backward[1]])
    ids = np.concatenate([forward[2], backward[2]])
    order = np.lexsort((steps, walks))
    return ids[order]


def _walks(graph, tables, first: int, seeds: np.ndarray, forward: bool, rng):
    """Walks from `seeds` (units of layer `first`) to the end; returns `(walk, step, id)`."""
    layer = np.full(len(seeds), first)
    unit = np.asarray(seeds, dtype=np.int64).copy()
    active = np.ones(len(seeds), dtype=bool)
    walks, steps, ids = [], [], []
    step = 0
    while active.any():
        current = np.flatnonzero(active)
        groups = [(i, current[layer[current] == i]) for i in np.unique(layer[current])]
        for index, members in groups:
            sampler = (tables.forward if forward else tables.backward)[index]
            rows = unit[members]
            live = sampler.live[rows]
            active[members[~live]] = False
            members, rows = members[live], rows[live]
            column = sampler.sample(rows, rng)
            units_in, units_out = graph.shapes[index][-2], graph.shapes[index][-1]
            if forward:
                position, other = np.divmod(column, units_out)
                flat = (position * units_in + rows) * units_out + other
            else:
                position, other = np.divmod(column, units_in)
                flat = (position * units_in + other) * units_out + rows
            walks.append(members)
            steps.append(np.full(len(members), step))
            ids.append(graph.offsets[index] + flat)
            links = (graph.following if forward else graph.preceding)[index]
            if not links:
                active[members] = False
                continue
            choice = rng.integers(len(links), size=len(members)) if len(links) > 1 else None
            for k, link in enumerate(links):
                chosen = slice(None) if choice is None else choice == k
                moved, arrived = members[chosen], other[chosen]
                layer[moved] = link.target if forward else link.source
                if link.features is None:
                    unit[moved] = arrived
                elif forward:
                    pick = rng.integers(link.features.shape[1], size=len(arrived))
                    unit[moved] = link.features[arrived, pick]
                else:
                    unit[moved] = link.channel_of[arrived]
        step += 1
    if not walks:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(part).astype(np.int64) for part in (walks, steps, ids))


def _walk_to_budget(graph, tables, expected, budget, rng) -> np.ndarray:
    """Visit counts of the connections kept by walking until `budget` is met (flat)."""
    alive = np.concatenate(tables.alive)
    walkable = alive & (expected > 0)
    count = len(graph.paths)
    layer_alive = np.array([a.sum() for a in tables.alive])
    layer_walkable = _per_layer(graph, walkable)
    walked = np.zeros(alive.size, dtype=bool)
    if budget.layers is not None:
        wanted = np.array([budget.layers[p] for p in graph.paths], dtype=np.int64)
        # A layer keeping every weight left needs no walk: all its connections count.
        full = wanted >= layer_alive
        for index in np.flatnonzero(full):
            start, stop = graph.offsets[index], graph.offsets[index + 1]
            walked[start:stop] = alive[start:stop]
        wanted = np.where(full, 0, wanted)
        total = 0
    elif budget.total is None:
        raise ConfigError("a phew budget needs a total or layer counts")
    elif budget.total >= alive.sum():
        return np.zeros(alive.size)  # every weight left is kept: no walk needed
    else:
        total = int(budget.total)
        floors = budget.floors or {}
        wanted = np.array([floors.get(p, 0) for p in graph.paths], dtype=np.int64)
    reachable = np.minimum(wanted, layer_walkable)
    short = int(max(total - walkable.sum(), 0) + (wanted - reachable).sum())
    total, wanted = min(total, int(walkable.sum())), reachable
    layer_count = _per_layer(graph, walked)
    visits = np.zeros(alive.size, dtype=np.int64)
    kept, pairs = 0, 0
    limit = MAX_WALKS_PER_WEIGHT * alive.size
    batch = _FIRST_BATCH
    while kept < total or np.any(layer_count < wanted):
        if 2 * pairs >= limit:
            break
        crossed = walk_pairs(graph, tables, pairs, batch, rng)
        pairs += batch
        batch = min(2 * batch, _MAX_BATCH)
        ids, first = np.unique(crossed, return_index=True)
        new = ~walked[ids]
        ids, first = ids[new], first[new]
        order = np.argsort(first, kind="stable")
        ids, first = ids[order], first[order]
        layers = graph.layer_of(ids)
        added = np.zeros(len(ids), dtype=bool)
        free = min(max(total - kept, 0), len(ids))
        added[:free] = True
        counted = layer_count + np.bincount(layers[:free], minlength=count)
        for index in np.flatnonzero(counted < wanted):
            candidates = free + np.flatnonzero(layers[free:] == index)
            added[candidates[: wanted[index] - counted[index]]] = True
        walked[ids[added]] = True
        kept += free
        layer_count += np.bincount(layers[added], minlength=count)
        done = kept >= total and not np.any(layer_count < wanted)
        end = first[added].max() + 1 if done and added.any() else len(crossed)
        crossed = crossed[:end]
        visits += np.bincount(crossed[walked[crossed]], minlength=alive.size)
    missing = short + max(total - kept, 0) + int(np.maximum(wanted - layer_count, 0).sum())
    if missing:
        logging.warning(
            "phew: the walks kept %d connections short of the budget (after %d walks); the "
            "rest goes to the connections walks cross most often in expectation",
            missing,
            2 * pairs,
        )
        fill = np.where(alive & ~walked, expected, 0.0)
        return visits + (0.5 * fill / fill.max() if fill.max() > 0 else fill)
    return visits.astype(np.float64)


def _per_layer(graph: _Graph, flags: np.ndarray) -> np.ndarray:
    """How many of each layer's connections are flagged."""
    return np.add.reduceat(flags.astype(np.int64), graph.offsets[:-1])
