"""A Transformer text classifier (Embedding + MultiHeadAttention) pruned inside `model.fit`.

`tfprune.keras.PruneAt` prunes with SynFlow at step 0 of the first `fit` (pruning at
initialization: no data needed; the all-ones input enters through the Embedding as the sum of
its rows, see the README). Token ids stay int32 from the dataset to the exported SavedModel.
Random token sequences, labelled by whether token 1 occurs, stand in for a dataset.

    python examples/transformer_text.py --output_dir=/tmp/transformer
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import tfprune


def transformer_classifier(vocabulary: int, length: int, width: int, heads: int) -> keras.Model:
    ids = keras.Input((length,), dtype="int32", name="ids")
    h = tfprune.MaskedEmbedding(vocabulary, width, name="tokens")(ids)
    attended = tfprune.MaskedMultiHeadAttention(heads, width // heads, name="attention")(
        h, h
    )
    h = keras.layers.LayerNormalization()(h + attended)
    ffn = tfprune.MaskedDense(width * 2, activation="relu", name="ffn_in")(h)
    h = keras.layers.LayerNormalization()(h + tfprune.MaskedDense(width, name="ffn_out")(ffn))
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(ids, tfprune.MaskedDense(2, name="logits")(h), name="transformer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabulary", type=int, default=1000)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output_dir", default="example_outputs/transformer")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.integers(2, args.vocabulary, size=(args.examples, args.length)).astype(np.int32)
    y = rng.integers(0, 2, size=args.examples).astype(np.int32)
    x[y == 1, rng.integers(0, args.length, size=int(y.sum()))] = 1

    model = transformer_classifier(args.vocabulary, args.length, args.width, args.heads)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    prune_at = tfprune.keras.PruneAt("synflow", args.density, step=0)
    history = model.fit(x, y, batch_size=32, epochs=args.epochs, callbacks=[prune_at], verbose=0)
    print(
        f"pruned {len(prune_at.report.masks)} kernels to density {prune_at.report.density:.4f}; "
        f"accuracy {history.history['accuracy'][-1]:.3f}"
    )

    os.makedirs(args.output_dir, exist_ok=True)
    model.save(os.path.join(args.output_dir, "model.keras"))
    saved = os.path.join(args.output_dir, "saved_model")
    tfprune.export(model, saved)
    serve = tf.saved_model.load(saved).signatures["serving_default"]
    (served,) = serve(inputs=tf.constant(x[:4])).values()
    print(f"SavedModel takes {serve.structured_input_signature[1]['inputs'].dtype.name} ids; "
          f"largest difference from Keras {np.max(np.abs(served.numpy() - model.predict(x[:4], verbose=0))):.2e}")


if __name__ == "__main__":
    main()
