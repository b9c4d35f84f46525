"""qnas: hardware-aware neural architecture search for QuadraNet.

``import qnas`` registers the QuadraNet family with timm, so
``timm.create_model("quadranet_t", num_classes=10)`` works afterwards.
"""
__version__ = "0.1.0"

from . import models, nn  # noqa: E402,F401  (registers the models with timm)
from .errors import QnasError  # noqa: E402,F401
