"""The examples of a source as deterministic `tf.data` pipelines: training, evaluation, pruning.

Preprocessing (SPEC §5): MNIST-like data is scaled to [0, 1]; CIFAR-10/100 get fixed per-channel
mean/std normalisation and zero padding by 4 + random 32x32 crop + horizontal flip; ImageNet and
Tiny ImageNet get a random resized crop (scale 0.1-1, ratio 0.8-1.25) + flip for training, a resize
to 256 + center crop to 224 (ImageNet) or nothing (Tiny, already 64x64) for evaluation, and
ImageNet mean/std. Other TFDS datasets are scaled to [0, 1] without augmentation.

Determinism: the order of a training epoch is a pure function of `(seed, epoch)` and the
augmentation of an example a pure function of `(seed, epoch, position in the epoch)` (stateless
random ops), so a run resumed at any batch replays exactly the data it would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfprune import streams
from tfprune.data.checks import check_int, check_limit, check_split
from tfprune.data.sources import open_source
from tfprune.data.sources.base import Source, Split
from tfprune.data.specs import SPECS, Recipe, spec
from tfprune.errors import ConfigError, DataError

_AUTOTUNE = tf.data.AUTOTUNE

# ---------------------------------------------------------------------------------------------
# Preprocessing and augmentation (float32 images in [0, 1], one example at a time)


def _pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """CIFAR augmentation: zero padding by `pad`, random crop back to size, random h-flip.

    Args:
        image: float32 [H, W, C] image.
        seed: int32/int64 [2] stateless seed; the same seed gives the same crop and flip.
        pad: pixels of zeros added on every side before cropping.

    Returns:
        float32 [H, W, C] image.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _random_resized_crop_flip(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    scale: tuple[float, float] = (0.1, 1.0),
    ratio: tuple[float, float] = (0.8, 1.25),
) -> tf.Tensor:
    """ImageNet augmentation: crop of random area and aspect ratio, resized to `size`, h-flip.

    If no crop within `scale`/`ratio` is found in 10 tries, the whole image is used.

    Args:
        image: float32 [H, W, C] image of any size.
        seed: int32/int64 [2] stateless seed.
        size: side of the square output.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's width / height.

    Returns:
        float32 [size, size, C] image.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=crop_seed,
        min_object_covered=scale[0],
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.image.resize(tf.slice(image, begin, extent), [size, size])
    return tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)


def _resize_center_crop(image: tf.Tensor, resize: int, size: int) -> tf.Tensor:
    """Resizes the shorter side to `resize` (aspect kept), then crops the `size`x`size` center."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.cast(tf.round(hw * (resize / tf.reduce_min(hw))), tf.int32)
    image = tf.image.resize(image, new_hw)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


class _Preprocess:
    """The preprocessing of one dataset, resolved from its recipe and the caller's flags."""

    def __init__(self, recipe: Recipe, name: str, normalize: bool | None):
        if normalize is not None and not isinstance(normalize, bool):
            raise ConfigError(f"normalize must be True, False or None, got {normalize!r}")
        self.recipe = recipe
        self.normalize = recipe.normalize if normalize is None else normalize
        if self.normalize and recipe.mean is None:
            raise ConfigError(f"{name} has no mean/std constants: pass normalize=False or None")

    def finish(self, image: tf.Tensor) -> tf.Tensor:
        """uint8 or [0, 1] float image(s) → normalised float32, for one image or a batch."""
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        if self.normalize:
            image = (image - tf.constant(self.recipe.mean)) / tf.constant(self.recipe.std)
        return image

    def eval_one(self, image: tf.Tensor) -> tf.Tensor:
        image = tf.cast(image, tf.float32) / 255.0
        if self.recipe.eval_resize is not None:
            image = _resize_center_crop(image, self.recipe.eval_resize, self.recipe.input_shape[0])
        return self.finish(image)

    def train_one(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        image = tf.cast(image, tf.float32) / 255.0
        if self.recipe.augment == "pad_crop_flip":
            image = _pad_crop_flip(image, seed)
        elif self.recipe.augment == "random_resized_crop":
            image = _random_resized_crop_flip(image, seed, self.recipe.input_shape[0])
        return self.finish(image)


def _in_memory_examples(
    split: Split,
    order: np.ndarray,
    batch_size: int,
    skip: int,
    prep: _Preprocess,
    augment_key: int | None,
) -> tf.data.Dataset:
    """Batches of `split` in `order` from example `skip` on, augmented if `augment_key` is set."""
    images, labels = split.images, tf.constant(split.labels)
    ds = tf.data.Dataset.from_tensor_slices((order[skip:], np.arange(skip, len(order))))
    if augment_key is None:
        # Every in-memory image already has the input shape: preprocess whole batches.
        ds = ds.batch(batch_size).map(
            lambda i, _: (prep.finish(tf.gather(images, i)), tf.gather(labels, i)),
            num_parallel_calls=_AUTOTUNE,
        )
    else:
        key = tf.constant(augment_key, tf.int64)
        ds = ds.map(
            lambda i, p: (
                prep.train_one(tf.gather(images, i), tf.stack([key, p])),
                tf.gather(labels, i),
            ),
            num_parallel_calls=_AUTOTUNE,
        ).batch(batch_size)
    return ds.prefetch(_AUTOTUNE)


def _epoch(split, n, batch_size, skip, prep, seed, epoch, augmenting) -> tf.data.Dataset:
    """Epoch `epoch` of the first `n` examples of an in-memory split: the order and the
    augmentation keys of the run's streams."""
    order = streams.generator(seed, "data_order", epoch).permutation(n)
    key = streams.key31(seed, "augmentation", epoch)
    return _in_memory_examples(split, order, batch_size, skip, prep, key if augmenting else None)


# ---------------------------------------------------------------------------------------------
# Public API


def arrays_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    like: str,
    seed: int,
    epoch: int = 0,
    augment: bool = True,
    normalize: bool | None = None,
) -> tf.data.Dataset:
    """One epoch of training batches of arrays in memory, preprocessed and augmented as the
    known dataset `like` is (SPEC §5), in the order `train_dataset` would give them.

    Args:
        images: uint8 array [N, H, W, C] of the shape `like`'s images have.
        labels: integer class indices [N] in [0, number of classes of `like`).
        batch_size: examples per batch; the last batch may be smaller.
        like: a dataset of the table (`tfprune.data.spec`), e.g. "cifar10".
        seed: non-negative integer seed of the run.
        epoch: index of the epoch (0-based).
        augment: apply `like`'s training augmentation.
        normalize: mean/std normalisation; None for `like`'s default.

    Returns:
        A `tf.data.Dataset` of (x float32 [B, H, W, C], y int32 [B]).

    Raises:
        ConfigError, DataError: for an unknown `like`, or arrays that do not fit it.

    Example:
        >>> images = np.zeros((256, 32, 32, 3), np.uint8)
        >>> ds = arrays_dataset(images, np.zeros(256, int), 128, like="cifar10", seed=0)
    """
    known = spec(like)
    if known is None:
        raise ConfigError(
            f"like={like!r} is not a dataset of the table; use one of {', '.join(SPECS)}"
        )
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    epoch = check_int("epoch", epoch, 0)
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.shape[1:] != known.input_shape:
        raise DataError(
            f"images must be uint8 of shape (n, {', '.join(map(str, known.input_shape))}) like "
            f"{like}, got {images.dtype} {images.shape}"
        )
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be {len(images)} integer class indices, got {labels.shape}")
    if labels.size and not 0 <= labels.min() <= labels.max() < known.num_classes:
        raise DataError(f"labels must lie in [0, {known.num_classes}) for {like}")
    split = Split(tf.constant(images), labels.astype(np.int32))
    prep = _Preprocess(known.recipe, like, normalize)
    augmenting = augment and known.recipe.augment != "none"
    return _epoch(split, len(images), batch_size, 0, prep, seed, epoch, augmenting)


def train_dataset(
    name: str,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    skip_batches: int = 0,
    augment: bool = True,
    data_dir: str | None = None,
    limit: int | None = None,
    normalize: bool | None = None,
) -> tf.data.Dataset:
    """One epoch of shuffled, augmented training batches.

    The order is a permutation that depends only on `(seed, epoch)`, and an example's
    augmentation only on `(seed, epoch, its position in the epoch)`, so the same arguments always
    give the same batches and `skip_batches=k` gives exactly batches k, k+1, ... of the epoch.
    (ImageNet, too large for memory, is streamed: its files are read in a seeded order through a
    seeded shuffle buffer of 16384 examples.)

    Args:
        name: dataset name (see `dataset_info`).
        batch_size: examples per batch; the last batch may be smaller.
        seed: non-negative integer seed of the run.
        epoch: index of the epoch (0-based).
        skip_batches: batches of this epoch to skip, to resume mid-epoch.
        augment: apply the dataset's training augmentation (none for grayscale datasets).
        data_dir: folder holding the data (see `dataset_info`).
        limit: keep only the first `limit` training examples (before shuffling).
        normalize: mean/std normalisation; None for the dataset's default (SPEC §5).

    Returns:
        A `tf.data.Dataset` of (x float32 [B, H, W, C], y int32 [B]).

    Example:
        >>> ds = train_dataset("fashion_mnist", 128, seed=0, epoch=3)
        >>> x, y = next(iter(ds))
        >>> x.shape, y.dtype
        (TensorShape([128, 28, 28, 1]), tf.int32)
    """
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    epoch = check_int("epoch", epoch, 0)
    skip_batches = check_int("skip_batches", skip_batches, 0)
    limit = check_limit(limit)
    if not isinstance(augment, bool):
        raise ConfigError(f"augment must be True or False, got {augment!r}")
    source = open_source(name, data_dir)
    prep = _Preprocess(source.recipe, source.name, normalize)
    n = source.num_examples("train")
    n = n if limit is None else min(n, limit)
    if skip_batches > math.ceil(n / batch_size):
        raise ConfigError(
            f"skip_batches={skip_batches} is past the end of an epoch of "
            f"{math.ceil(n / batch_size)} batches: resume from a step inside the epoch"
        )
    key = streams.key31(seed, "augmentation", epoch)
    augmenting = augment and source.recipe.augment != "none"
    skip = skip_batches * batch_size
    if source.in_memory:
        return _epoch(source.split("train"), n, batch_size, skip, prep, seed, epoch, augmenting)
    shuffle_key = streams.key31(seed, "data_order", epoch)
    ds = source.stream("train", shuffle_key=shuffle_key, limit=limit).enumerate().skip(skip)
    tf_key = tf.constant(key, tf.int64)
    ds = ds.map(
        lambda p, xy: (
            prep.train_one(xy[0], tf.stack([tf_key, p])) if augmenting else prep.eval_one(xy[0]),
            xy[1],
        ),
        num_parallel_calls=_AUTOTUNE,
    )
    return ds.batch(batch_size).prefetch(_AUTOTUNE)


def eval_dataset(
    name: str,
    batch_size: int,
    *,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    normalize: bool | None = None,
) -> tf.data.Dataset:
    """Batches of a split in its stored order, without augmentation.

    Args:
        name: dataset name (see `dataset_info`).
        batch_size: examples per batch; the last batch may be smaller.
        split: "test" (Tiny ImageNet: its val folder; ImageNet: its validation split) or "train".
        data_dir: folder holding the data (see `dataset_info`).
        limit: keep only the first `limit` examples.
        normalize: mean/std normalisation; None for the dataset's default (SPEC §5).

    Returns:
        A `tf.data.Dataset` of (x float32 [B, H, W, C], y int32 [B]).

    Example:
        >>> acc = model.evaluate(eval_dataset("fashion_mnist", 1000))
    """
    batch_size = check_int("batch_size", batch_size, 1)
    split = check_split(split)
    limit = check_limit(limit)
    source = open_source(name, data_dir)
    prep = _Preprocess(source.recipe, source.name, normalize)
    if source.in_memory:
        n = source.num_examples(split)
        order = np.arange(n if limit is None else min(n, limit))
        return _in_memory_examples(source.split(split), order, batch_size, 0, prep, None)
    ds = source.stream(split, shuffle_key=None, limit=limit)
    ds = ds.map(lambda x, y: (prep.eval_one(x), y), num_parallel_calls=_AUTOTUNE)
    return ds.batch(batch_size).prefetch(_AUTOTUNE)


def pruning_data(
    name: str,
    examples_per_class: int = 10,
    *,
    seed: int,
    data_dir: str | None = None,
    normalize: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The examples SNIP and GraSP score with (SPEC §2): N per class from the training split.

    The examples are drawn by `seed` (same seed, same examples), exactly `examples_per_class` of
    every class, preprocessed as for evaluation (no augmentation) and returned in a seeded
    shuffled order. (ImageNet, too large to index, takes the first N of each class met in a
    seeded shuffled stream.)

    Args:
        name: dataset name (see `dataset_info`).
        examples_per_class: N, examples of each class.
        seed: non-negative integer seed of the run.
        data_dir: folder holding the data (see `dataset_info`).
        normalize: mean/std normalisation; None for the dataset's default (SPEC §5).

    Returns:
        (x float32 [N * classes, H, W, C], y int32 [N * classes]).

    Example:
        >>> x, y = pruning_data("fashion_mnist", 10, seed=0)
        >>> x.shape, np.bincount(y).tolist()
        ((100, 28, 28, 1), [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    per_class = check_int("examples_per_class", examples_per_class, 1)
    seed = check_int("seed", seed, 0)
    source = open_source(name, data_dir)
    prep = _Preprocess(source.recipe, source.name, normalize)
    num_classes = source.info().num_classes
    rng = streams.generator(seed, "pruning_data")
    if source.in_memory:
        split = source.split("train")
        counts = np.bincount(split.labels, minlength=num_classes)
        chosen = []
        for c in range(num_classes):
            if counts[c] < per_class:
                raise _too_few(source.name, c, counts[c], per_class)
            chosen.append(rng.choice(np.flatnonzero(split.labels == c), per_class, replace=False))
        index = rng.permutation(np.concatenate(chosen))
        x = prep.finish(tf.gather(split.images, index)).numpy()
        return x.astype(np.float32), split.labels[index]
    return _pruning_data_streamed(source, prep, per_class, num_classes, rng)


def _too_few(name: str, label: int, count: int, wanted: int) -> DataError:
    return DataError(
        f"class {label} of {name} has only {count} training examples, fewer than "
        f"examples_per_class={wanted}: lower examples_per_class"
    )


def _pruning_data_streamed(
    source: Source,
    prep: _Preprocess,
    per_class: int,
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    key = int(rng.integers(2**31))
    taken: dict[int, list[np.ndarray]] = {c: [] for c in range(num_classes)}
    missing = num_classes
    for image, label in source.stream("train", shuffle_key=key, limit=None):
        c = int(label)
        if len(taken[c]) < per_class:
            taken[c].append(prep.eval_one(image).numpy())
            missing -= len(taken[c]) == per_class
            if not missing:
                break
    for c, images in taken.items():
        if len(images) < per_class:
            raise _too_few(source.name, c, len(images), per_class)
    x = np.stack([im for c in range(num_classes) for im in taken[c]]).astype(np.float32)
    y = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    order = rng.permutation(len(y))
    return x[order], y[order]
