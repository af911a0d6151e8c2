"""Training recipes: absl programs with the paper's settings.

Run from the repository root, as modules of this package:

    python -m recipes.cifar --help
    python -m recipes.imagenet --help

`recipes.common` is what they share (flags, builders, `run`); the
benchmarks of `tools/` import it as `from recipes import common`. Not part
of the installed `tf_prunetrain` package.
"""
