"""One-shot ranking of the search-vs-random children under other supernets (diagnostic)."""
import json, sys
import pandas as pd
import torch
from scipy.stats import kendalltau
from qnas.nas.best import load_best
from qnas.nas.evaluator import inherited_top1, search_data
from qnas.nas.supernet import load_supernet
from qnas.space import load_space

torch.set_num_threads(1)
space = load_space("quadranet_shallow")
# the report's own per-child table (top-1 mean over seeds, inherited with the default search)
children = pd.read_csv("experiments/results/search_vs_random/children.csv").set_index("child")
children = children.rename(columns={"top1_mean": "top1", "inherited_top1": "default_inherited"})
ops = pd.read_csv("experiments/results/search_vs_random/results.csv").groupby("child")["ops"]
children["ops"] = ops.first()
children = children[["ops", "top1", "default_inherited"]]
data = search_data("digit-pairs:val=3000,split=0", 32, 0, 0.2)
rows = {}
for name in sys.argv[1:]:
    best = load_best(f"runs/explore/{name}/best.json")
    net = load_supernet(best.supernet_checkpoint, space=space)
    rows[name] = [inherited_top1(net, ops.split(), data, data.val, 64, 0) for ops in children["ops"]]
for name, values in rows.items():
    children[f"inherited_{name}"] = values
out = children.drop(columns="ops").sort_values("top1", ascending=False).round(1)
print(out.to_string())
for column in [c for c in out.columns if c.endswith(tuple(["inherited"] + list(rows)))]:
    tau, p = kendalltau(children[column], children["top1"])
    print(f"Kendall tau {column} vs retrained: {tau:+.2f} (p = {p:.2f})")
out.to_csv("/tmp/oneshot.csv")
