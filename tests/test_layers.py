"""The package's layering (pyproject.toml's import-linter contract), no import cycles, and a
light ``import qnas`` (the CLI answers --help without loading torch)."""
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of a directed graph (iterative)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def test_no_import_cycles_between_modules():
    g = grimp.build_graph("qnas", cache_dir=None)
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_import_qnas_and_the_configs_do_not_load_torch():
    code = ("import sys, qnas, qnas.nas.config, qnas.train.config, qnas.cli; "
            "qnas.cli._register_commands(); "
            "print(sorted(m for m in ('torch', 'timm', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_timm_knows_the_family_whatever_the_import_order():
    for code in ("import qnas, timm", "import timm, qnas", "import qnas.nn, timm"):
        result = subprocess.run(
            [sys.executable, "-c", f"{code}; m = timm.create_model('quadranet_xxs', "
                                   f"num_classes=3); print(type(m).__name__)"],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and result.stdout.strip() == "QuadraNet", \
            (code, result.stderr[-1000:])
