"""Prunes keras.applications MobileNetV2 and ResNet50 (untrained) with SNIP at 10% density.

Each network is converted with `tfprune.masked`, pruned at initialization from one batch,
trained a few steps with `model.fit`, saved as `.keras` and exported as a SavedModel whose
kernels hold real zeros. Random images stand in for a dataset.

    python examples/prune_applications.py --output_dir=/tmp/applications
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

import tfprune

NETWORKS = {
    "mobilenet_v2": keras.applications.MobileNetV2,
    "resnet50": keras.applications.ResNet50,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="mobilenet_v2,resnet50")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--output_dir", default="example_outputs/applications")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    size = args.image_size
    x = rng.normal(size=(args.batch_size * args.steps, size, size, 3)).astype(np.float32)
    y = rng.integers(0, args.classes, size=len(x)).astype(np.int32)
    for name in args.networks.split(","):
        stock = NETWORKS[name](
            weights=None,
            input_shape=(size, size, 3),
            classes=args.classes,
            classifier_activation=None,
        )
        model = tfprune.masked(stock)
        report = tfprune.prune_with_report(
            model, "snip", args.density, data=(x[: args.batch_size], y[: args.batch_size])
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
        directory = os.path.join(args.output_dir, name)
        os.makedirs(directory, exist_ok=True)
        model.save(os.path.join(directory, "model.keras"))
        exported = tfprune.export(model, os.path.join(directory, "saved_model"))
        print(
            f"{name}: {len(report.masks)} prunable kernels, density {report.density:.4f}, "
            f"loss {history.history['loss'][-1]:.4f}, exported zeros "
            f"{exported['prunable_zeros']} of {exported['prunable_params']} prunable weights"
        )


if __name__ == "__main__":
    main()
