"""MNIST-like datasets from their four IDX files, gzip'd or not.

The files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`) are looked for in `data_dir/<name>/`, `data_dir/`, then the spec's
installed folders. Reading them needs neither the network nor TFDS, and describing them (their
headers) not even TensorFlow.
"""

from __future__ import annotations

import functools
import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from tfprune.data.checks import first_line
from tfprune.data.sources.base import Source, Split
from tfprune.data.specs import SPECS, DatasetInfo
from tfprune.errors import DataError

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_idx_header(raw: bytes, path: Path, ndim: int) -> tuple[int, ...]:
    header = 4 + 4 * ndim
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise DataError(
            f"{path} is not an IDX file of bytes with {ndim} dimensions (magic number "
            f"{raw[:4].hex() or 'missing'}): replace it with an intact copy"
        )
    if len(raw) < header:
        raise DataError(f"{path} is truncated in its IDX header: replace it with an intact copy")
    return struct.unpack(f">{ndim}I", raw[4:header])


def _read_idx(path: Path, ndim: int, *, header_only: bool = False) -> np.ndarray | tuple:
    """Reads an IDX file of unsigned bytes; returns its dims if `header_only`, else the array."""
    try:
        with _open_idx(path) as f:
            raw = f.read(4 + 4 * ndim) if header_only else f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read {path} ({first_line(e)}): replace it with an intact copy"
        ) from e
    dims = _parse_idx_header(raw, path, ndim)
    if header_only:
        return dims
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(dims):
        raise DataError(
            f"{path} holds {len(raw) - offset} data bytes but its header announces "
            f"{math.prod(dims)}: the file is truncated or corrupt, replace it with an intact copy"
        )
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_idx_files(name: str, data_dir: str | None) -> dict[str, tuple[Path, Path]] | None:
    folders = []
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(
                f"data_dir {data_dir!r} is not a directory: give the folder holding the {name} "
                "IDX files, or leave data_dir unset to use the installed copy"
            )
        folders += [Path(data_dir) / name, Path(data_dir)]
    folders += SPECS[name].installed_dirs
    for folder in folders:
        found = {
            split: tuple(_find_idx_file(folder, stem) for stem in stems)
            for split, stems in _IDX_FILES.items()
        }
        present = [p for pair in found.values() for p in pair if p is not None]
        if len(present) == 4:
            return found
        if present:
            missing = [
                stem
                for split, stems in _IDX_FILES.items()
                for stem, path in zip(stems, found[split], strict=True)
                if path is None
            ]
            raise DataError(
                f"{folder} holds only some IDX files of {name}: add {', '.join(missing)} "
                "(gzip'd or not)"
            )
    return None


@functools.lru_cache(maxsize=4)
def _idx_split(images_path: Path, labels_path: Path, num_classes: int) -> Split:
    import tensorflow as tf  # only holding the examples needs it, not describing them

    images = _read_idx(images_path, 3)
    labels = _read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels: "
            "use files of the same release"
        )
    if labels.size and labels.max() >= num_classes:
        raise DataError(
            f"{labels_path} has label {labels.max()}, outside [0, {num_classes}): "
            "replace it with an intact copy"
        )
    return Split(tf.constant(images[..., None]), labels.astype(np.int32))


class IdxSource(Source):
    """The four IDX files of a dataset, held in memory."""

    def __init__(self, name: str, files: dict[str, tuple[Path, Path]]):
        self.name = name
        self.files = files
        self.spec = SPECS[name]
        self.recipe = self.spec.recipe

    @classmethod
    def open(cls, name: str, data_dir: str | None) -> IdxSource | None:
        files = _find_idx_files(name, data_dir)
        return None if files is None else cls(name, files)

    def info(self) -> DatasetInfo:
        n, h, w = _read_idx(self.files["train"][0], 3, header_only=True)
        n_test = _read_idx(self.files["test"][0], 3, header_only=True)[0]
        return DatasetInfo(self.name, (h, w, 1), self.spec.num_classes, n, n_test)

    def split(self, split: str) -> Split:
        return _idx_split(*self.files[split], self.spec.num_classes)
