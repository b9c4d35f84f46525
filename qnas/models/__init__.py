"""Model families. Importing this registers every constructor with timm."""
from .quadranet import MODEL_NAMES, QuadraNet, parse_op

__all__ = ["QuadraNet", "parse_op", "MODEL_NAMES"]
