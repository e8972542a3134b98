"""MNIST data: the offline sample, and the downloader the training Job uses — fetched over HTTP
from a local mirror (no network), parsed from IDX, refused when a checksum does not match."""

from __future__ import annotations

import functools
import gzip
import http.server
import struct
import threading

import numpy as np
import pytest

from workloads.mnist import data


def test_sample_is_5000_balanced_images_in_unit_range():
    sample = data.sample()
    assert sample.X.shape == (5000, 28, 28) and sample.X.dtype == np.float32
    assert sample.X.min() == 0.0 and sample.X.max() == 1.0
    assert np.bincount(sample.y).tolist() == [500] * 10


def _idx(values: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, values.ndim) + struct.pack(f">{values.ndim}I", *values.shape)
    return gzip.compress(header + values.astype(np.uint8).tobytes())


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP mirror holding tiny IDX files, with `data.FILES` pointing at their MD5 sums."""
    rng = np.random.default_rng(0)
    served = tmp_path / "mirror"
    served.mkdir()
    arrays = {"train_images": rng.integers(0, 256, (6, 28, 28)), "train_labels": np.arange(6),
              "test_images": rng.integers(0, 256, (4, 28, 28)), "test_labels": np.arange(4)}
    files = {}
    for key, (name, _) in data.FILES.items():
        (served / name).write_bytes(_idx(arrays[key]))
        files[key] = (name, data.md5(served / name))
    monkeypatch.setattr(data, "FILES", files)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", arrays, served, server
    server.shutdown()


def test_downloads_verifies_and_parses_both_splits(mirror, tmp_path):
    url, arrays, _, server = mirror
    train, test = data.download(tmp_path / "cache", mirror=url)
    assert train.X.shape == (6, 28, 28) and test.y.tolist() == [0, 1, 2, 3]
    assert np.allclose(train.X * 255, arrays["train_images"])
    server.shutdown()  # verified files already on disk are reused without the network
    again, _ = data.download(tmp_path / "cache", mirror=url)
    assert np.array_equal(again.X, train.X)


def test_a_file_with_the_wrong_checksum_is_refused_and_removed(mirror, tmp_path):
    url, _, served, _ = mirror
    name = data.FILES["test_labels"][0]
    (served / name).write_bytes(_idx(np.arange(4)[::-1]))  # substituted content
    with pytest.raises(ValueError, match=f"{name}: MD5 .*, expected"):
        data.download(tmp_path / "cache", mirror=url)
    assert not (tmp_path / "cache" / name).exists()


def test_rejects_a_file_that_is_not_idx(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(path)
