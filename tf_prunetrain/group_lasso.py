"""Old home of `add_group_lasso`; it now lives in `regularizers`."""

from tf_prunetrain.regularizers import add_group_lasso

__all__ = ["add_group_lasso"]
