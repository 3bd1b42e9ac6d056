"""The toy problem the training tests share: 6 features, the class says whether the first two
add up to more than 0, and a `Trainer` over it (3 iterations an epoch, batches of 32, each
epoch in its own seeded order)."""

import numpy as np
import tensorflow as tf

from tfprune.training import Trainer


def toy_problem(seed=0, n=96):
    """`(x, y)`: n examples of 6 normal features and their binary class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x, y


def toy_trainer(output_dir, config, model, x, y, **kwargs):
    """A `Trainer` of `model` on `(x, y)` writing to `output_dir`; `kwargs` go to `Trainer`."""

    def train_data(epoch, skip):
        order = np.random.default_rng(epoch).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(32).skip(skip)

    def eval_data():
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

    return Trainer(model, config, train_data, eval_data, 3, str(output_dir), **kwargs)
