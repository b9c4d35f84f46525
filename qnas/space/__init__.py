"""Search spaces: what can be chosen (``search_spaces/*.yaml``), and the child of a choice."""
from .space import LayerSlot, SearchSpace, list_spaces, load_space, space_from_dict

__all__ = ["SearchSpace", "LayerSlot", "load_space", "list_spaces", "space_from_dict"]
