"""Search vs random at equal latency: does the search FIND anything?

The first question a reviewer asks of a NAS method (Li & Talwalkar 2019; Yang et al., ICLR
2020): is the searched child better than children drawn at random from the same space at the
same latency, and than the hand-designed network scaled to the budget? An experiment of kind
``search_vs_random`` (``experiments/search_vs_random.yaml``):

1. searches the space on the target device and budget T once per seed of ``search_seeds``
   (``search-s<seed>/``, normal search runs with qnas's default derivation, ``alpha+eval``);
   the children that ProxylessNAS's derivation (the most probable child within the budget)
   gives in the same searches are the group ``most-probable``;
2. draws ``random_children`` children uniformly among the architectures whose table latency
   lies in [(1 − band)·T, T] (uniform per layer, rejected outside the band — which is uniform
   over the architectures in the band);
3. builds the hand-designed network: QuadraNet's own block (the space's largest kernel and
   expansion) in every position of the first ``round(f·depth_s)`` layers of each stage, with
   the largest f whose latency fits T (QuadraNet scaled down by depth);
4. measures every child's top-1 with the first search's supernet weights (inherited,
   BatchNorm-recalibrated where it has BN) on the validation split, and retrains every child
   from scratch with one recipe and several seeds; with ``test: N`` each retrained child's
   final weights are then scored on N test canvases (:func:`qnas.data.load_test_split`: new
   canvases of the held-out handwriting, ``test.json`` in the run folder) and that score is
   the one compared — on the validation canvases alone, seed noise was as large as the
   differences between the children of the band;
5. reports mean ± std per group, the searched children's ranks among all children, and the
   one-shot ranking quality: Kendall τ between inherited and retrained top-1 over the children.

Each child has a folder ``children/<name>/`` with its best.json and ``retrain-s<seed>/``; finished
trainings are reused on ``--resume``. The results are ``results.csv`` (one row per child and seed)
and ``children.csv`` (one row per child).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, ttest_ind

from ..data import check_spec, load_test_split
from ..errors import QnasError
from ..models.ops import is_identity, kernel_and_expansion
from ..nas.best import FILE_NAME as BEST
from ..nas.best import BestRecord, load_best
from ..nas.config import SearchConfig
from ..nas.evaluator import inherited_top1, search_data
from ..nas.latency import TableView, latency_table
from ..nas.search import search
from ..nas.supernet import load_supernet
from ..nas.sweep import has_checkpoint
from ..predictors.registry import get
from ..runtime.files import write_csv_atomic, write_text_atomic
from ..settings import from_dict
from ..space import SearchSpace, load_space
from ..train.config import RetrainConfig
from ..train.retraining import SUMMARY, retrain, score_on_test
from ..train.retraining import has_checkpoint as retrain_has_checkpoint
from ..units import format_ms, parse_latency
from . import plots
from .checks import (
    RETRAIN_OWN,
    SEARCH_OWN,
    check_int,
    data_spec,
    device_name,
    mapping,
    own_settings,
    resolution,
)
from .markdown import md_table, provenance_md
from .results import REPORT, RESULTS

KEYS = {"data", "resolution", "space", "target", "search", "search_seeds", "random_children",
        "band", "retrain", "seeds", "test"}
REQUIRED = {"space", "target"}
CHILDREN_CSV = "children.csv"
GROUPS = ("searched", "most-probable", "random", "hand-designed")


@dataclass
class SearchVsRandomSettings:
    data: str
    resolution: int
    space: str                      # a name or a resolved YAML path
    device: str
    budget_ms: float
    search: SearchConfig            # the search (device and budget set; seed: the first)
    search_seeds: list[int]
    random_children: int
    band: float
    retrain: RetrainConfig          # the recipe of every child (seed: the first)
    seeds: list[int]
    test: int = 0                   # test canvases every child is finally scored on (0: none)


def parse(raw: dict, seed: int, base: Path, where: str) -> SearchVsRandomSettings:
    """Validate the kind's keys (one line naming the file and the key)."""
    data = data_spec(raw, where)
    size = resolution(raw, where)
    spec = raw["space"]
    if not isinstance(spec, str):
        raise QnasError(f"{where}: space must be a space name or YAML path, got {spec!r}")
    if spec.endswith((".yaml", ".yml")) and not Path(spec).is_absolute():
        spec = str((base / spec).resolve())
    try:
        load_space(spec).check_resolution(size)
    except QnasError as err:
        raise QnasError(f"{where}: space: {err}") from None
    target = raw["target"]
    if not isinstance(target, dict) or set(target) != {"device", "latency"}:
        raise QnasError(f"{where}: target must be {{device: ..., latency: ...}}, got {target!r}")
    device = device_name(target["device"], where, "target")
    try:
        budget = parse_latency(target["latency"])
    except QnasError as err:
        raise QnasError(f"{where}: target: {err}") from None
    search_section = own_settings(mapping(raw, "search", where), SEARCH_OWN, where, "search")
    search_config = from_dict(SearchConfig, {**search_section, "space": spec, "data": data,
                                             "resolution": size, "seed": seed,
                                             "device": device, "latency": budget},
                              f"{where}: search")
    count = check_int(raw.get("random_children", 8), "random_children", where, low=2)
    band = raw.get("band", 0.1)
    if isinstance(band, bool) or not isinstance(band, (int, float)) or not 0 < band < 1:
        raise QnasError(f"{where}: band must be a fraction in (0, 1), got {band!r}")
    seeds = _seeds(raw.get("seeds", [0, 1]), "seeds", where)
    search_seeds = _seeds(raw.get("search_seeds", [seed]), "search_seeds", where)
    retrain_section = own_settings(mapping(raw, "retrain", where), RETRAIN_OWN - {"epochs"},
                                   where, "retrain")
    recipe = from_dict(RetrainConfig, {**retrain_section, "data": data, "seed": seeds[0],
                                       "resolution": size}, f"{where}: retrain")
    test = check_int(raw.get("test", 0), "test", where)
    if test and (test < 10 or check_spec(data)[0] != "digit-pairs"):
        raise QnasError(f"{where}: test ({test}) needs data digit-pairs and at least 10 "
                        f"canvases: only digit-pairs draws a test split; leave test out for "
                        f"{data!r}")
    return SearchVsRandomSettings(data, size, spec, device, budget,
                                  replace(search_config, seed=search_seeds[0]), search_seeds,
                                  count, float(band), recipe, seeds, test)


def _seeds(value, key: str, where: str) -> list[int]:
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value)):
        raise QnasError(f"{where}: {key} must be a non-empty list of distinct non-negative "
                        f"integers, got {value!r}")
    return list(value)


# --- the children -------------------------------------------------------------------------------

def random_children(space: SearchSpace, table: TableView, budget_ms: float, band: float,
                    count: int, seed: int, tries: int = 500_000) -> list[list[str]]:
    """``count`` distinct children drawn uniformly among those with table latency in
    [(1 − band)·budget, budget]."""
    rng = np.random.default_rng([seed, 97])
    low = (1.0 - band) * budget_ms
    found, seen = [], set()
    for _ in range(tries):
        ops = [slot.ops[int(rng.integers(len(slot.ops)))] for slot in space.layers]
        key = tuple(ops)
        if key in seen:
            continue
        if low <= table.latency_of(ops) <= budget_ms:
            seen.add(key)
            found.append(ops)
            if len(found) == count:
                return found
    raise QnasError(f"only {len(found)} of {count} random children of '{space.name}' lie in "
                    f"[{format_ms(low)}, {format_ms(budget_ms)}]; widen the band or move the "
                    f"budget towards the middle of the space's latency range")


def hand_designed(space: SearchSpace, table: TableView,
                  budget_ms: float) -> tuple[list[str], float]:
    """QuadraNet's block everywhere, scaled down by depth to fit the budget: ``(ops, f)``."""
    block = max((op for op in space.candidates if not is_identity(op)),
                key=lambda op: kernel_and_expansion(op))
    best = None
    for step in range(100, -1, -1):
        fraction = step / 100
        ops = []
        for slot in space.layers:
            depth = space.depths[slot.stage]
            keep = max(1, round(fraction * depth)) if fraction > 0 else 0
            ops.append(block if slot.position < keep and block in slot.ops else
                       next((op for op in slot.ops if is_identity(op)), slot.ops[0]))
        if table.latency_of(ops) <= budget_ms:
            best = (ops, fraction)
            break
    if best is None:
        raise QnasError(f"no depth-scaled QuadraNet of '{space.name}' fits "
                        f"{format_ms(budget_ms)}")
    return best


@dataclass
class Child:
    name: str
    group: str
    ops: list[str]
    folder: Path


def _plan(settings: SearchVsRandomSettings, out: Path, searches: dict[int, Path],
          space: SearchSpace, table: TableView, seed: int) -> list[Child]:
    children = []
    for search_seed, best_path in searches.items():
        record = load_best(best_path)
        children.append(Child(f"searched-s{search_seed}", "searched", record.ops,
                              best_path.parent))
        most_probable = (record.record.derivation or {}).get("most_probable")
        if most_probable and most_probable["ops"] != record.ops:
            children.append(Child(f"most-probable-s{search_seed}", "most-probable",
                                  list(most_probable["ops"]),
                                  out / "children" / f"most-probable-s{search_seed}"))
    for i, ops in enumerate(random_children(space, table, settings.budget_ms, settings.band,
                                            settings.random_children, seed)):
        children.append(Child(f"random-{i + 1}", "random", ops, out / "children" /
                              f"random-{i + 1}"))
    ops, _ = hand_designed(space, table, settings.budget_ms)
    children.append(Child("hand-designed", "hand-designed", ops,
                          out / "children" / "hand-designed"))
    return children


def _search(s: SearchVsRandomSettings, seed: int, out: Path, echo, resume: bool,
            progress: bool) -> Path:
    folder = out / f"search-s{seed}"
    tag = f"[search s{seed}]"
    if resume and (folder / BEST).is_file():
        echo(f"{tag} reusing {folder / BEST}")
        return folder / BEST
    echo(f"{tag} {s.search.space} on {s.device} within {format_ms(s.budget_ms)} → {folder}")
    result = search(replace(s.search, seed=seed), out=folder,
                    resume=resume and has_checkpoint(folder), progress=progress,
                    echo=lambda m: echo(f"{tag} {m}"))
    if not result.finished:
        raise QnasError("the search stopped early; continue the experiment with --resume")
    return folder / BEST


def run(experiment, out: Path, echo, resume: bool = False, progress: bool = False) -> pd.DataFrame:
    """The experiment (see the module doc); returns the per-seed results table."""
    s: SearchVsRandomSettings = experiment.settings
    space = load_space(s.space)
    table = latency_table(space, get(s.device))
    searches = {seed: _search(s, seed, out, echo, resume, progress) for seed in s.search_seeds}
    # every child's inherited top-1 comes from ONE supernet (the first search's), so that the
    # one-shot ranking compares like with like
    first = load_best(searches[s.search_seeds[0]])
    supernet = load_supernet(first.supernet_checkpoint, space=space)
    data = search_data(s.search.data, s.search.resolution, s.search.seed, s.search.arch_fraction)
    children = _plan(s, out, searches, space, table, experiment.seed)
    tests: dict[int, object] = {}      # the test split of each retraining seed (drawn once)
    rows = []
    for child in children:
        best_path = child.folder / BEST
        inherited = inherited_top1(supernet, child.ops, data, data.val, s.search.batch_size,
                                   s.search.seed)
        if child.group != "searched" and not best_path.is_file():
            record = BestRecord.of_fixed_architecture(
                space, child.ops, s.device, dataset=s.data, resolution=s.resolution,
                seed=experiment.seed, why=f"a {child.group} child of the search-vs-random "
                                          f"experiment")
            record.write(best_path)
        record = BestRecord.read(best_path)
        for seed in s.seeds:
            train_out = child.folder / f"retrain-s{seed}"
            tag = f"[{child.name} seed {seed}]"
            if (train_out / SUMMARY).is_file():
                top1 = json.loads((train_out / SUMMARY).read_text())["val_top1"]
                echo(f"{tag} reusing {train_out / SUMMARY}")
            else:
                echo(f"{tag} {s.retrain.epochs} epochs → {train_out}")
                result = retrain(best_path, replace(s.retrain, seed=seed), out=train_out,
                                 resume=retrain_has_checkpoint(train_out),
                                 progress=progress, echo=lambda m, t=tag: echo(f"{t} {m}"))
                if not result.finished:
                    raise QnasError(f"{tag} the training stopped early; continue the "
                                    f"experiment with --resume")
                top1 = result.top1
            row = {"child": child.name, "group": child.group, "seed": seed, "top1": top1,
                   "val_top1": top1}
            if s.test:
                if seed not in tests:
                    tests[seed] = load_test_split(s.data, s.resolution, seed, s.test)
                row["top1"] = row["test_top1"] = score_on_test(
                    train_out, tests[seed], f"{s.data} test={s.test}")
            rows.append({**row, "inherited_top1": inherited,
                         "latency_ms": table.latency_of(child.ops),
                         "predicted_ms": record.predicted_latency_ms,
                         "blocks": sum(not is_identity(op) for op in child.ops),
                         "ops": " ".join(child.ops),
                         "run": str(train_out.relative_to(out))})
            write_csv_atomic(pd.DataFrame(rows), out / RESULTS)
    frame = pd.DataFrame(rows)
    write_csv_atomic(summarize(frame), out / CHILDREN_CSV)
    return frame


# --- the analysis -------------------------------------------------------------------------------

def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per child: mean ± std of the retrained top-1 over seeds, its rank (1 = best)."""
    grouped = frame.groupby(["child", "group"], sort=False)
    children = grouped.agg(top1_mean=("top1", "mean"), top1_std=("top1", "std"),
                           inherited_top1=("inherited_top1", "first"),
                           latency_ms=("latency_ms", "first"), blocks=("blocks", "first"),
                           seeds=("seed", "count")).reset_index()
    # equal means summed in another order differ in the last bit: round so that ties are ties
    # (ranks, Kendall τ)
    children["top1_mean"] = children["top1_mean"].round(9)
    children["rank"] = children["top1_mean"].rank(ascending=False, method="min").astype(int)
    return children


def analysis(children: pd.DataFrame) -> dict:
    """Per group mean ± std (over children's means), the searched children's ranks, the share
    of random children their mean beats, Kendall τ."""
    groups = {}
    for group in GROUPS:
        part = children[children["group"] == group]["top1_mean"]
        groups[group] = (float(part.mean()) if len(part) else math.nan,
                         float(part.std()) if len(part) > 1 else math.nan, int(len(part)))
    searched = children[children["group"] == "searched"]
    tau, p_value = kendalltau(children["inherited_top1"], children["top1_mean"])
    random = children[children["group"] == "random"]["top1_mean"]
    searched_mean = float(searched["top1_mean"].mean())
    # does the search beat random? Welch's t-test on the children's seed means, one-sided
    # (searched > random): the question a reviewer asks, with the noise of both groups
    beats_p = math.nan
    if len(searched) > 1 and len(random) > 1:
        with warnings.catch_warnings():       # identical means (tiny runs): p is NaN, say "–"
            warnings.simplefilter("ignore", RuntimeWarning)
            beats_p = float(ttest_ind(searched["top1_mean"], random, equal_var=False,
                                      alternative="greater").pvalue)
    return {"groups": groups, "searched_ranks": [int(r) for r in searched["rank"]],
            "children": len(children), "searched_top1": searched_mean,
            "beats_random_share": float((random < searched_mean).mean()),
            "searched_minus_random": searched_mean - float(random.mean()),
            "beats_random_p": beats_p,
            "kendall_tau": float(tau), "kendall_p": float(p_value)}


def per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """Searched and random means for each retraining seed alone, and their difference."""
    rows = []
    for seed, part in frame.groupby("seed"):
        means = part.groupby("group")["top1"].mean()
        if {"searched", "random"} <= set(means.index):
            rows.append({"seed": int(seed), "searched": means["searched"],
                         "random": means["random"],
                         "searched − random": means["searched"] - means["random"]})
    return pd.DataFrame(rows)


def budget_allocation(frame: pd.DataFrame, children: pd.DataFrame, space) -> str:
    """Where each group puts its blocks: mean blocks per stage and the share of expansion-4
    blocks, for α's children, the random ones and the best-retrained third of the random ones —
    whether the search spends the budget where retraining rewards it."""
    ops = frame.groupby("child")["ops"].first().str.split()

    def profile(names) -> str:
        stages = np.array([[sum(not is_identity(op) for op in stage)
                            for stage in space.stage_ops(ops[name])] for name in names])
        blocks = [op for name in names for op in ops[name] if not is_identity(op)]
        wide = np.mean([kernel_and_expansion(op)[1] == 4 for op in blocks]) if blocks else 0.0
        return f"{'/'.join(f'{v:.1f}' for v in stages.mean(0))} (e4: {wide:.0%})"

    alpha_children = children[children["group"].isin(["searched", "most-probable"])]["child"]
    random = children[children["group"] == "random"].sort_values("top1_mean", ascending=False)
    best_random = random["child"][:max(1, len(random) // 3)]
    return (f"- Where the blocks sit (mean blocks per stage, of "
            f"{'/'.join(map(str, space.depths))}; share of expansion-4 blocks): α's children "
            f"{profile(alpha_children)}; random {profile(random['child'])}; the best-retrained "
            f"third of the random ones {profile(best_random)}.")


def resolving_power(frame: pd.DataFrame) -> dict:
    """Can this experiment tell children apart at all? The pooled seed-to-seed std of one
    child's retrained top-1, the std of the random children's means, and what seed noise alone
    would give for that std (pooled / √seeds): when the two are alike, children of the band do
    not differ measurably under this recipe, and no search can be seen to beat random."""
    per_child = frame.groupby("child")["top1"]
    seeds = int(per_child.count().min())
    pooled = float(np.sqrt(per_child.var(ddof=1).mean())) if seeds > 1 else math.nan
    random_means = frame[frame["group"] == "random"].groupby("child")["top1"].mean()
    return {"seeds": seeds, "seed_std": pooled,
            "random_means_std": float(random_means.std(ddof=1)) if len(random_means) > 1
            else math.nan,
            "noise_only_std": pooled / math.sqrt(seeds) if seeds > 1 else math.nan}


def diagnosis(folder: Path, children: pd.DataFrame, config: dict,
              frame: pd.DataFrame | None = None) -> list[str]:
    """Facts that say why the searched children rank where they do: how much of the budget
    they use, how the supernet itself ranks them, how decided α was at the end, and whether
    the retrained top-1 can resolve differences between children at all."""
    budget = parse_latency(config["target"]["latency"])
    others = children[~children["group"].isin(["searched", "most-probable"])]
    random = others[others["group"] == "random"]["latency_ms"] / budget
    lines = [f"- Budget used: the random children take {random.min():.0%}–{random.max():.0%} "
             f"of the budget."]
    for _, child in children[children["group"].isin(["searched", "most-probable"])].iterrows():
        inherited_rank = int((others["inherited_top1"] > child["inherited_top1"]).sum()) + 1
        lines.append(f"- `{child['child']}` ({child['group']}): {child['latency_ms'] / budget:.0%}"
                     f" of the budget, {child['blocks']} blocks; by inherited top-1 "
                     f"{child['inherited_top1']:.1f}% it would rank {inherited_rank} among the "
                     f"{len(others) + 1} (random and hand-designed: "
                     f"{others['inherited_top1'].min():.1f}–{others['inherited_top1'].max():.1f}%)"
                     f"; retrained {child['top1_mean']:.1f}%, rank {child['rank']} of "
                     f"{len(children)}.")
    space = None if str(config["space"]).endswith((".yaml", ".yml")) else \
        load_space(config["space"])
    uniform = math.log(len(space.candidates)) if space is not None else float("nan")
    for log_path in sorted(folder.glob("search-s*/search_log.csv")):
        log = pd.read_csv(log_path)
        lines.append(f"- α at the end of `{log_path.parent.name}`: mean per-layer entropy "
                     f"{log['entropy'].iloc[-1]:.2f} nats (uniform: {uniform:.2f}); E[LAT] "
                     f"{log['expected_ms'].iloc[-1]:.4g} ms, the arg-max child "
                     f"{log['argmax_ms'].iloc[-1]:.4g} ms.")
    alpha_children = children[children["group"].isin(["searched", "most-probable"])]
    random_children_ = children[children["group"] == "random"]
    if len(alpha_children) and len(random_children_):
        lines.append(f"- One-shot bias: with the supernet's weights α's children score "
                     f"{alpha_children['inherited_top1'].mean():.1f}% on average, the random "
                     f"ones {random_children_['inherited_top1'].mean():.1f}%; retrained "
                     f"{alpha_children['top1_mean'].mean():.1f}% against "
                     f"{random_children_['top1_mean'].mean():.1f}%. The search's weight "
                     f"steps sample paths from α, so the weights favour α's children: "
                     f"inherited top-1 ranks them among themselves, not against uniform ones.")
    if frame is not None and space is not None:
        lines.append(budget_allocation(frame, children, space))
    if frame is not None:
        power = resolving_power(frame)
        if math.isfinite(power["seed_std"]):
            lines.append(f"- Resolving power: one child's retrained top-1 varies by "
                         f"{power['seed_std']:.1f} points (std) from seed to seed; the "
                         f"random children's {power['seeds']}-seed means spread by "
                         f"{power['random_means_std']:.1f} points, against "
                         f"{power['noise_only_std']:.1f} that seed noise alone would give. "
                         + ("Children of the band barely differ beyond noise under this "
                            "recipe: a win of the search could not be seen with "
                            f"{power['seeds']} seeds."
                            if power["random_means_std"] < 1.5 * power["noise_only_std"] else
                            "The children differ beyond seed noise."))
    return ["## Why the searched children rank where they do", "", *lines, ""]


def report(folder: Path, manifest: dict) -> Path:
    """report.md + plot of a search-vs-random results folder."""
    frame = pd.read_csv(folder / RESULTS)
    children = summarize(frame)
    facts = analysis(children)
    settings = manifest.get("resolved") or {}
    config = manifest["config"]
    test = int(config.get("test") or 0)
    scored = f"top-1 on {test:,} test canvases" if test else "validation top-1"
    path = plots.plot_search_vs_random(children, config["target"], folder / "search_vs_random.png",
                                       scored_on="test" if test else "val")
    md = [f"# {manifest['name']}: {manifest.get('description') or 'search vs random'}", "",
          *provenance_md(manifest), ""]
    g = facts["groups"]
    most_probable = (f" ProxylessNAS's derivation in the same searches (the most probable child "
                     f"within the budget) gives {g['most-probable'][0]:.1f}% "
                     f"(n = {g['most-probable'][2]})." if g["most-probable"][2] else
                     "" if (config.get("search") or {}).get("derive", "alpha+eval") != "alpha+eval"
                     else " In every search the derivation kept ProxylessNAS's child (the most "
                     "probable one within the budget): no drawn child was significantly better "
                     "on the held-out canvases.")
    md += [f"Space `{config['space']}`, target {config['target']['device']} ≤ "
           f"{config['target']['latency']}, data `{config.get('data')}`; every child retrained "
           f"with one recipe ({settings.get('retrain', {}).get('epochs', '?')} epochs) and seeds "
           f"{settings.get('seeds')}; searches with seeds {settings.get('search_seeds')}; "
           f"children compared by their {scored}"
           f"{' (new canvases of the held-out handwriting, scored once at the end)' if test else ''}"
           f".", "",
           f"**Result:** the searched children (qnas's `alpha+eval` derivation) reach "
           f"{facts['searched_top1']:.1f} ± {_number(g['searched'][1])}% {scored} (mean over "
           f"searches of the mean over retraining seeds; n = {g['searched'][2]}), ranks "
           f"{', '.join(map(str, facts['searched_ranks']))} of {facts['children']} children; "
           f"random children of the same latency band reach {g['random'][0]:.1f} ± "
           f"{g['random'][1]:.1f}% (n = {g['random'][2]}), the depth-scaled hand-designed "
           f"QuadraNet {g['hand-designed'][0]:.1f}%.{most_probable} The searched children's "
           f"mean beats {facts['beats_random_share']:.0%} of the random children; searched "
           f"− random {facts['searched_minus_random']:+.1f} points (Welch's t-test, one-sided, "
           f"p = {_p_value(facts['beats_random_p'])}). One-shot "
           f"ranking quality, Kendall τ between inherited (supernet) and retrained top-1 over "
           f"the {facts['children']} children: {facts['kendall_tau']:.2f} "
           f"(p = {_p_value(facts['kendall_p'])}).", ""]
    if test and "val_top1" in frame:
        val = analysis(summarize(frame.assign(top1=frame["val_top1"])))
        md += [f"On the validation canvases (what each run reported while it trained) the same "
               f"children give: searched {val['searched_top1']:.1f} ± "
               f"{_number(val['groups']['searched'][1])}%, random "
               f"{val['groups']['random'][0]:.1f} ± {_number(val['groups']['random'][1])}%, "
               f"searched − random {val['searched_minus_random']:+.1f} points (p = "
               f"{_p_value(val['beats_random_p'])}), Kendall τ "
               f"{val['kendall_tau']:.2f}.", ""]
    md += diagnosis(folder, children, config, frame)
    rows = pd.DataFrame([{"group": group, "children": n, "top-1 mean": mean, "± std": std}
                         for group, (mean, std, n) in g.items() if n])
    md += ["## Per group (mean ± std over the children's seed means)", "",
           *md_table(rows, {"top-1 mean": ".1f", "± std": ".1f"}).splitlines(), ""]
    seeds = per_seed(frame)
    if len(seeds) > 1:
        md += ["Per retraining seed (is the difference there with every seed, or made by one?):",
               "", *md_table(seeds, {"searched": ".2f", "random": ".2f",
                                     "searched − random": "+.2f"}).splitlines(), ""]
    md += [f"![search vs random]({path.name})", "", "## Every child", ""]
    view = children[["child", "group", "latency_ms", "blocks", "inherited_top1", "top1_mean",
                     "top1_std", "rank"]]
    md += md_table(view, {"latency_ms": ".4g", "inherited_top1": ".1f", "top1_mean": ".1f",
                          "top1_std": ".1f"}).splitlines()
    md += ["", "## Files", "", f"- `{RESULTS}`: one row per child and seed; `{CHILDREN_CSV}`: "
           "one row per child", "- `search-s<seed>/`: the search runs (best.json, logs, "
           "checkpoints); `children/<name>/`: each other child's best.json and "
           "`retrain-s<seed>/` runs", ""]
    return write_text_atomic(folder / REPORT, "\n".join(md) + "\n")


def _number(value: float, form: str = ".1f") -> str:
    return "–" if not math.isfinite(value) else format(value, form)


def _p_value(value: float) -> str:
    """Two decimals, or two significant digits below 0.01 (0.0025 is not "0.00")."""
    if not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if value >= 0.01 else f"{value:.2g}"
