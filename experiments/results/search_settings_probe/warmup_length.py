"""One-shot ranking vs warm-up length (diagnostic): warm up a supernet on the search-vs-random
setting for each length given (uniform paths, weights only: `qnas train-supernet`), score the 12
children of children_12.csv (the search-vs-random run this probe studied) with its weights on the 3,000 fixed validation canvases, and
compare with their retrained top-1 (20 epochs, 3 seeds).

    python experiments/results/search_settings_probe/warmup_length.py 24 48 96 [--out runs/warmups]

Run from the repository root; a length whose supernet.pt exists under --out is reused.
Writes warmup_length.csv (one row per child, one column per length) next to this file.
"""
import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import kendalltau, spearmanr

from qnas.nas.evaluator import inherited_top1, search_data
from qnas.nas.supernet import load_supernet
from qnas.space import load_space

HERE = Path(__file__).parent
DATA = "digit-pairs:val=3000,split=0"

parser = argparse.ArgumentParser()
parser.add_argument("lengths", nargs="+", type=int)
parser.add_argument("--out", default="runs/warmups")
args = parser.parse_args()

children = pd.read_csv(HERE / "children_12.csv").set_index("child")
ops = children["ops"]
table = children[["group", "top1_mean"]].rename(columns={"top1_mean": "retrained_top1"})
space = load_space("quadranet_shallow")
data = search_data(DATA, 32, 0, 0.2)
for epochs in args.lengths:
    folder = Path(args.out) / f"warmup{epochs}"
    if not (folder / "supernet.pt").is_file():
        subprocess.run([sys.executable, "-m", "qnas", "train-supernet", "--space",
                        "quadranet_shallow", "--data", DATA, "--warmup-epochs", str(epochs),
                        "--seed", "0", "--out", str(folder), "-q"]
                       + (["--resume"] if (folder / "run.log").is_file() else []), check=True)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    net = load_supernet(folder / "supernet.pt", space=space)
    column = f"inherited_{epochs}ep"
    table[column] = [inherited_top1(net, ops[c].split(), data, data.val, 64, 0)
                     for c in table.index]
    tau, p = kendalltau(table[column], table["retrained_top1"])
    rho, _ = spearmanr(table[column], table["retrained_top1"])
    print(f"warm-up {epochs:3d} epochs: Kendall tau {tau:+.2f} (p = {p:.2f}), Spearman "
          f"{rho:+.2f}; inherited top-1 {table[column].min():.1f}-{table[column].max():.1f}%",
          flush=True)
table.sort_values("retrained_top1", ascending=False).round(1).to_csv(HERE / "warmup_length.csv")
