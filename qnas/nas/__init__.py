"""NAS, separated as NNI does: space (what can be chosen), strategy (how α is learned),
latency (what it costs, from :mod:`qnas.predictors`), evaluator (training and validation)."""
from ..space import LayerSlot, SearchSpace, list_spaces, load_space

__all__ = ["SearchSpace", "LayerSlot", "load_space", "list_spaces"]
