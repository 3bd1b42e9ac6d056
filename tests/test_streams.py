"""The random streams of a run are independent: no purpose reuses another's draws.

Each library function that draws at random is run under a spy that records the
`SeedSequence` state of every NumPy generator (or key) it creates; two purposes that share a
state would draw the same numbers (the pruning sample equal to the reinit draws, the data
order of an epoch equal to the shuffle permutation, ...).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest

import tfprune
from tfprune import data, streams
from tfprune.pruning.ablations import reinitialize, shuffle_masks

SEED = 3


class _Spy:
    """Records the state of every SeedSequence made or used while a purpose is active."""

    def __init__(self, monkeypatch):
        self.states: dict[str, set[tuple[int, ...]]] = {}
        self.active: str | None = None
        spy = self
        real_default_rng, real_seed_sequence = np.random.default_rng, np.random.SeedSequence

        class Recorded(real_seed_sequence):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                spy.record(self)

        def default_rng(seed=None):
            if seed is not None:
                spy.record(seed if isinstance(seed, real_seed_sequence) else Recorded(seed))
            return real_default_rng(seed)

        monkeypatch.setattr(np.random, "SeedSequence", Recorded)
        monkeypatch.setattr(np.random, "default_rng", default_rng)

    def record(self, sequence) -> None:
        if self.active is not None and sequence.entropy is not None:
            state = tuple(int(v) for v in sequence.generate_state(4))
            self.states.setdefault(self.active, set()).add(state)

    @contextlib.contextmanager
    def purpose(self, name: str):
        self.active = name
        try:
            yield
        finally:
            self.active = None


def _model() -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    h = tfprune.MaskedDense(16, name="fc1")(h)
    return keras.Model(inputs, tfprune.MaskedDense(10, name="out")(h))


def test_every_purpose_draws_from_its_own_stream(monkeypatch):
    spy = _Spy(monkeypatch)
    model = _model()
    epochs = range(6)
    for epoch in epochs:
        with spy.purpose(f"data order of epoch {epoch}"):
            data.train_dataset("fashion_mnist", 32, seed=SEED, epoch=epoch, limit=64)
    with spy.purpose("pruning data"):
        data.pruning_data("fashion_mnist", 1, seed=SEED)
    with spy.purpose("random scores"):
        tfprune.score(model, "random", seed=SEED)
        # The layerwise baselines are random scores with another allocation: the same purpose.
        tfprune.prune(model, "uniform", 0.5, seed=SEED)
    with spy.purpose("shuffle"):
        shuffle_masks(tfprune.get_masks(model), SEED)
    with spy.purpose("reinit"):
        reinitialize(model, SEED)

    assert set(spy.states) >= {"pruning data", "random scores", "shuffle", "reinit"}
    assert {f"data order of epoch {e}" for e in epochs} <= set(spy.states)
    owners: dict[tuple[int, ...], str] = {}
    for purpose, states in spy.states.items():
        for state in states:
            other = owners.setdefault(state, purpose)
            assert other == purpose, f"{purpose} draws the same stream as {other}"


def test_streams_are_pure_functions_of_seed_name_and_keys():
    first = streams.generator(SEED, "data_order", 4).permutation(100)
    np.testing.assert_array_equal(first, streams.generator(SEED, "data_order", 4).permutation(100))
    assert not np.array_equal(first, streams.generator(SEED, "data_order", 5).permutation(100))
    assert not np.array_equal(first, streams.generator(SEED + 1, "data_order", 4).permutation(100))
    assert 0 <= streams.key31(SEED, "augmentation", 0) < 2**31


def test_unknown_stream_and_wrong_keys_are_refused():
    with pytest.raises(ValueError, match="unknown random stream 'epoch'"):
        streams.generator(0, "epoch")
    # A key count fixed per stream keeps (stream, epoch 0) apart from (stream) without a key.
    with pytest.raises(ValueError, match="takes 1 keys"):
        streams.generator(0, "data_order")
    with pytest.raises(ValueError, match="takes 0 keys"):
        streams.generator(0, "shuffle", 1)
