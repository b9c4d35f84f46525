"""Cheap proxies for the retrained top-1 of the search-vs-random children (diagnostic):
inherited weights fine-tuned for E epochs, and E epochs from scratch; Kendall tau of each."""
import sys
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch.utils.data import DataLoader
from qnas.data import epoch_view, load_dataset
from qnas.nas.best import load_best
from qnas.nas.evaluator import evaluate_top1
from qnas.nas.supernet import load_supernet
from qnas.space import load_space

torch.set_num_threads(1)
EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
space = load_space("quadranet_shallow")
# the 12 children of the search-vs-random run this probe studied (see children_12.csv)
children = pd.read_csv("experiments/results/search_settings_probe/children_12.csv").set_index("child")
data = load_dataset("digit-pairs:val=3000,split=0", 32, seed=0)
val = DataLoader(data.val, batch_size=256)
supernet = load_supernet(load_best("runs/experiments/svr4/search-s0/best.json").supernet_checkpoint,
                         space=space)


def train(model, epochs):
    steps = epochs * (len(data.train) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        for x, y in DataLoader(epoch_view(data.train, epoch), batch_size=64, shuffle=True,
                               generator=g, drop_last=True):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
    return evaluate_top1(model, val)


rows = []
for name, child in children.iterrows():
    ops = child["ops"].split()
    torch.manual_seed(0)
    tuned = train(supernet.child(ops), EPOCHS)
    torch.manual_seed(0)
    scratch = train(space.build_child(ops, num_classes=10), EPOCHS)
    rows.append({"child": name, "retrained": child["top1_mean"], "inherited": child["inherited_top1"],
                 f"inherited+{EPOCHS}ep": tuned, f"scratch {EPOCHS}ep": scratch})
    print(rows[-1], flush=True)
frame = pd.DataFrame(rows).set_index("child")
frame.to_csv(f"/tmp/proxy/proxy_{EPOCHS}.csv")
for column in frame.columns[1:]:
    tau, p = kendalltau(frame[column], frame["retrained"])
    print(f"Kendall tau {column} vs retrained: {tau:+.2f} (p = {p:.2f})")
