"""
The import layering of ARCHITECTURE.md, checked on the source: no import
cycle inside ``netmem_probe/`` (imports inside functions count, ``if
TYPE_CHECKING:`` ones do not), each module imports only modules of its own
layer or a lower one, and each module imports alone in a fresh interpreter.
"""

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "netmem_probe"

#: ARCHITECTURE.md's layers, bottom first, as module names without the
#: ``netmem_probe.`` prefix ("" is the package itself).  A module may import
#: modules of its own layer (without a cycle) and of the layers below.
LAYERS = (
    (
        "",
        "elf",
        "genl",
        "btf",
        "btf_drgn",
        "report",
        "report.progress",
        "report.table",
        "kernel",
        "kernel.cache",
        "kernel.platform",
    ),
    ("kernel.walk",),
    ("kernel.structs", "kernel.globals", "kernel.layout", "kernel.printk", "kernel.slab"),
    (
        "kernel.netdev",
        "kernel.netmem",
        "kernel.actors",
        "kernel.queues",
        "kernel.softnet",
        "kernel.qdisc",
    ),
    ("kernel.memmap",),
    ("kernel.search", "kernel.skbs", "kernel.pool_discovery", "kernel.statics"),
    ("kernel.page_pool",),
    ("kernel.areas", "kernel.drivers", "kernel.drivers.*"),
    ("kernel.devmem", "kernel.zcrx"),
    ("kernel.niovs",),
    ("kernel.providers",),
    ("kernel.decode", "kernel.pages", "kernel.holders", "kernel.leaks", "kernel.summary"),
    ("kallsyms_btf", "target", "netlink"),
    ("context",),
    ("snippets", "snippets.*"),
    ("commands.*",),
    ("commands", "cli", "__main__", "drgn_plugin"),
)

#: The fake backend builds Programs for tests, scripts and benchmarks; the
#: tool itself never imports it, and it imports nothing of the tool.
FAKE = "fake"


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, root: Path = ROOT) -> Set[str]:
    """The modules ``path`` imports anywhere but under TYPE_CHECKING."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # "from package import module" imports the module.
            found.update(f"{module}.{alias.name}" for alias in node.names)
        for inner in ast.iter_child_nodes(node):
            visit(inner)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _graph() -> Dict[str, Set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): (_imports(p) & modules) - {_module_name(p)} for p in paths}


def _short(module: str) -> str:
    return module[len("netmem_probe.") :] if module != "netmem_probe" else ""


def _layer(module: str) -> int:
    short = _short(module)
    for rank, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(short, pattern) for pattern in patterns):
            return rank
    raise LookupError(short)


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle through each strongly connected component that has one."""
    cycles = []
    state: Dict[str, int] = {}  # 1 on the stack, 2 done
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle_inside_the_package():
    assert _cycles(_graph()) == []


def test_function_local_and_relative_imports_are_edges(tmp_path):
    # The cycle check must not pass by missing imports hidden in functions.
    path = tmp_path / "netmem_probe" / "kernel" / "netmem.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "def f():\n    from netmem_probe.kernel import providers\n"
        "def g():\n    from .page_pool import ptr_ring_entries\n"
    )
    assert _imports(path, tmp_path) >= {
        "netmem_probe.kernel.providers",
        "netmem_probe.kernel.page_pool",
    }


def test_type_checking_imports_are_not_edges(tmp_path):
    path = tmp_path / "netmem_probe" / "m.py"
    path.parent.mkdir()
    path.write_text(
        "import typing\n"
        "if typing.TYPE_CHECKING:\n"
        "    from netmem_probe.cli import Target\n"
        "else:\n"
        "    from netmem_probe.report import hexaddr\n"
    )
    found = _imports(path, tmp_path)
    assert "netmem_probe.report" in found
    assert "netmem_probe.cli" not in found


def test_cycle_finder_reports_each_cycle_once():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_every_module_has_a_layer():
    missing = []
    for module in _graph():
        if _short(module).split(".")[0] == FAKE:
            continue
        try:
            _layer(module)
        except LookupError:
            missing.append(module)
    assert missing == [], "add these to LAYERS here and to ARCHITECTURE.md"


def test_modules_import_only_their_layer_and_below():
    wrong: List[str] = []
    for module, deps in _graph().items():
        if _short(module).split(".")[0] == FAKE:
            wrong.extend(f"{module} -> {dep}" for dep in deps if _short(dep).split(".")[0] != FAKE)
            continue
        for dep in deps:
            if _short(dep).split(".")[0] == FAKE:
                wrong.append(f"{module} -> {dep} (fake/ is for tests, scripts, benchmarks)")
            elif _layer(dep) > _layer(module):
                wrong.append(f"{module} -> {dep} (a higher layer)")
    assert wrong == []


# Forked from an interpreter that has imported nothing of netmem_probe (only
# the third-party packages it needs, to pay for them once), each child
# imports one module into a fresh state: as `python -c "import MODULE"` would.
IMPORT_EACH = """
import os, sys, traceback
import click, drgn
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print(" ".join(failed))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_each_module_imports_alone_in_a_fresh_interpreter():
    modules = sorted(_graph())
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], done.stderr
