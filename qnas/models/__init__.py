"""Model families, timm-style: one file per family, constructors registered by name.

Importing :mod:`qnas.models.quadranet` registers the QuadraNet family with timm."""
from .mbconvnet import MBConvNet
from .ops import IDENTITY, is_identity, parse_op
from .quadranet import MODEL_NAMES, QuadraNet

__all__ = ["QuadraNet", "MBConvNet", "parse_op", "is_identity", "IDENTITY", "MODEL_NAMES"]
