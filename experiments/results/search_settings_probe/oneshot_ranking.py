"""One-shot ranking of the search-vs-random children under other supernets (diagnostic)."""
import json, sys
from pathlib import Path
import pandas as pd
import torch
from scipy.stats import kendalltau
from qnas.nas.best import load_best
from qnas.nas.evaluator import inherited_top1, search_data
from qnas.nas.supernet import load_supernet
from qnas.space import load_space

torch.set_num_threads(1)
space = load_space("quadranet_shallow")
# the 12 children of the search-vs-random run this probe studied (12 warm-up epochs; top-1 mean
# over 3 retraining seeds, inherited with its first search's supernet), frozen in children_12.csv
children = pd.read_csv("experiments/results/search_settings_probe/children_12.csv").set_index("child")
children = children.rename(columns={"top1_mean": "top1", "inherited_top1": "default_inherited"})
children = children[["ops", "top1", "default_inherited"]]
data = search_data("digit-pairs:val=3000,split=0", 32, 0, 0.2)
rows = {}
for name in sys.argv[1:]:
    folder = Path(name) if Path(name).is_dir() else Path("runs/explore") / name
    best = load_best(folder / "best.json")
    net = load_supernet(best.supernet_checkpoint, space=space)
    rows[Path(name).name] = [inherited_top1(net, ops.split(), data, data.val, 64, 0) for ops in children["ops"]]
for name, values in rows.items():
    children[f"inherited_{name}"] = values
out = children.drop(columns="ops").sort_values("top1", ascending=False).round(1)
print(out.to_string())
for column in [c for c in out.columns if c.endswith(tuple(["inherited"] + list(rows)))]:
    tau, p = kendalltau(children[column], children["top1"])
    print(f"Kendall tau {column} vs retrained: {tau:+.2f} (p = {p:.2f})")
out.to_csv(Path(__file__).parent / "oneshot_ranking.csv")
