"""Small data sets written in the real on-disk formats, for loader and
recipe tests (no download is possible here)."""

import gzip
import os
import pickle

import numpy as np
import tensorflow as tf


def write_cifar_file(path, rows: np.ndarray, labels: list[int],
                     label_key: bytes, protocol: int = 2) -> None:
    """One batch laid out like the official CIFAR "python version" pickles:
    channel-major uint8 rows (1024 red, 1024 green, 1024 blue values)."""
    batch = {b"batch_label": b"testing batch",
             b"data": rows,
             label_key: labels,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(rows))]}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def write_cifar(directory: str, num_classes: int = 10,
                per_batch: int = 4) -> None:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test)
    files of random images in `directory`."""
    names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
             if num_classes == 10 else ["train", "test"])
    label_key = b"labels" if num_classes == 10 else b"fine_labels"
    rng = np.random.default_rng(0)
    for name in names:
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, num_classes, per_batch)]
        write_cifar_file(os.path.join(directory, name), rows, labels, label_key)


def example(features: dict[str, bytes | int]) -> bytes:
    """A serialized tf.train.Example of bytes and int64 features."""
    feature = {}
    for key, value in features.items():
        if isinstance(value, bytes):
            feature[key] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[value]))
        else:
            feature[key] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(
        features=tf.train.Features(feature=feature)).SerializeToString()


def write_records(path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def write_imagenet_tfrecords(directory: str, classes: int = 3,
                             per_split: int = 8, shards: int = 2) -> None:
    """`train-0000k-of-0000n` / `validation-...` TFRecords in the standard
    ImageNet layout: JPEG bytes of varying sizes, 1-based labels."""
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for shard in range(shards):
            images = [rng.integers(0, 256, (40 + 4 * i, 48 - 2 * i, 3),
                                   dtype=np.uint8)
                      for i in range(per_split // shards)]
            write_records(
                os.path.join(directory, f"{split}-{shard:05d}-of-{shards:05d}"),
                [example({"image/encoded": tf.io.encode_jpeg(img).numpy(),
                          "image/class/label": 1 + i % classes})
                 for i, img in enumerate(images)])


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """`array` (uint8) in the IDX format: two zero bytes, type code 0x08,
    the dimension count, each dimension as a big-endian 32-bit integer, then
    the values in row-major order; gzipped like the distributed files."""
    array = np.ascontiguousarray(array, np.uint8)
    raw = (bytes([0, 0, 0x08, array.ndim])
           + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
           + array.tobytes())
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if compress else raw)


def write_fashion_mnist(directory: str, train: int = 30, test: int = 10,
                        compress: bool = True,
                        seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four Fashion-MNIST IDX files with random 28x28 images and labels
    in 0..9; returns {"train"|"test": (images (N, 28, 28), labels)}."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    suffix = ".gz" if compress else ""
    for split, count, prefix in (("train", train, "train"),
                                 ("test", test, "t10k")):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"),
                  images, compress)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"),
                  labels, compress)
        written[split] = (images, labels)
    return written
