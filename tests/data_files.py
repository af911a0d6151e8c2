"""Small data sets written in the real on-disk formats, for loader and
recipe tests (no download is possible here)."""

import os
import pickle

import numpy as np
import tensorflow as tf


def cifar_records(n: int, num_classes: int, seed: int) -> dict:
    """One CIFAR "python version" batch: channel-major uint8 rows."""
    rng = np.random.default_rng(seed)
    label_key = b"labels" if num_classes == 10 else b"fine_labels"
    return {b"batch_label": b"synthetic batch",
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, num_classes, n)],
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_cifar(directory: str, num_classes: int = 10,
                per_batch: int = 4) -> dict[str, dict]:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test)
    pickles in `directory`; returns what was written, by file name."""
    names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
             if num_classes == 10 else ["train", "test"])
    written = {}
    for seed, name in enumerate(names):
        written[name] = cifar_records(per_batch, num_classes, seed)
        with open(os.path.join(directory, name), "wb") as f:
            pickle.dump(written[name], f, protocol=2)
    return written


def _example(image: np.ndarray, label: int) -> bytes:
    encoded = tf.io.encode_jpeg(image).numpy()
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def write_imagenet_tfrecords(directory: str, classes: int = 3,
                             per_split: int = 8, shards: int = 2) -> None:
    """`train-0000k-of-0000n` / `validation-...` TFRecords in the standard
    ImageNet layout: JPEG bytes of varying sizes, 1-based labels."""
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for shard in range(shards):
            path = os.path.join(directory,
                                f"{split}-{shard:05d}-of-{shards:05d}")
            with tf.io.TFRecordWriter(path) as writer:
                for i in range(per_split // shards):
                    size = (40 + 4 * i, 48 - 2 * i, 3)
                    image = rng.integers(0, 256, size, dtype=np.uint8)
                    writer.write(_example(image, 1 + i % classes))
