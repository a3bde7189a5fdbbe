"""keraseq: the classic path from recurrent networks to attention as Keras 3 layers."""

__version__ = "0.1.0"

from keraseq.layers import *  # noqa: F401,F403
from keraseq.layers import __all__ as _layer_names

__all__ = list(_layer_names)
