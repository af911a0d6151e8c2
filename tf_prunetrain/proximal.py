"""Old home of the proximal step; it now lives in `regularizers`."""

from tf_prunetrain.regularizers import ProximalStep, attach_proximal_step

__all__ = ["ProximalStep", "attach_proximal_step"]
