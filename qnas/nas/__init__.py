"""NAS, separated as NNI does it — one module per concept:

- :mod:`.config`: what defines a search (budget(s) and device parsed once; the defaults);
- space: what can be chosen (:mod:`qnas.space`); :mod:`.supernet`: the mixed ops and α;
- :mod:`.proxyless`: the strategy, how α is learned (binary gates, one/two paths);
- :mod:`.latency`: what it costs — the differentiable expected latency, the loss forms, the
  latency table of a space on a device, and the "within budget" rule;
- :mod:`.derive`: the child under the hard budget; :mod:`.evaluator`: data splits, top-1;
- :mod:`.search`: the search on the resumable loop; :mod:`.sweep`: one warm-up, many budgets;
- :mod:`.best`: best.json, its only reader and writer.
"""
from .._lazy import lazy_exports

# (the functions search() and sweep() live in modules of the same name: import them from there)
__getattr__, __dir__ = lazy_exports(__name__, {
    "SearchConfig": "config", "OptimConfig": "config", "train_supernet": "search",
    "SearchResult": "search", "BestRecord": "best", "load_best": "best",
})
