"""A Conv2D/Conv2DTranspose autoencoder pruned with GraSP under its own loss (mean squared error).

The model is compiled with `loss="mse"`, so `tfprune.prune` scores it with that loss (a model
that is not compiled would be scored with cross-entropy). It is pruned at initialization,
trained a few epochs to reconstruct its inputs, saved, and exported as TFLite.

    python examples/autoencoder_mse.py --output_dir=/tmp/autoencoder
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

import tfprune


def autoencoder(size: int, width: int) -> keras.Model:
    images = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(images)
    h = keras.layers.Conv2D(width * 2, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu")(h)
    return keras.Model(images, keras.layers.Conv2D(1, 3, padding="same")(h), name="autoencoder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output_dir", default="example_outputs/autoencoder")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    grid = np.linspace(-1.0, 1.0, args.size, dtype=np.float32)
    centres = rng.uniform(-0.5, 0.5, size=(args.examples, 2, 1, 1)).astype(np.float32)
    x = np.exp(-((grid[None, None, :] - centres[:, 0]) ** 2 + (grid[None, :, None] - centres[:, 1]) ** 2) * 8)
    x = x[..., None].astype(np.float32)

    model = tfprune.masked(autoencoder(args.size, args.width))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    report = tfprune.prune_with_report(model, "grasp", args.density, data=(x[:64], x[:64]))
    history = model.fit(x, x, batch_size=32, epochs=args.epochs, verbose=0)
    print(
        f"pruned to density {report.density:.4f}; reconstruction mse "
        f"{history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}"
    )
    os.makedirs(args.output_dir, exist_ok=True)
    model.save(os.path.join(args.output_dir, "model.keras"))
    exported = tfprune.export(model, os.path.join(args.output_dir, "model.tflite"), format="tflite")
    print(f"TFLite file {exported['file_bytes']} bytes, dense {exported['dense']['file_bytes']}")


if __name__ == "__main__":
    main()
