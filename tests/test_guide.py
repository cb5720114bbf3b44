"""
docs/guide.md: a walk through an investigation on a bundled fixture, whose
outputs are made by scripts/make-guide and must match what the commands
print today.
"""

import importlib.machinery
import importlib.util
import re

from conftest import ROOT

GUIDE = ROOT / "docs" / "guide.md"


def make_guide():
    """scripts/make-guide, loaded as a module."""
    path = str(ROOT / "scripts" / "make-guide")
    loader = importlib.machinery.SourceFileLoader("make_guide", path)
    spec = importlib.util.spec_from_loader("make_guide", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_guide_is_what_its_commands_print_today():
    text = GUIDE.read_text()
    fresh = make_guide().regenerate(text)
    assert fresh == text, "docs/guide.md is stale: run .venv/bin/python scripts/make-guide"


def test_the_guide_tells_the_whole_story():
    text = GUIDE.read_text()
    commands = re.findall(r"^\$ netmem-probe -f \S+ (\w+)", text, re.MULTILINE)
    assert {"pools", "pool", "pages", "leaks", "holders", "decode", "niovs"} <= set(commands)
    assert "stalled pool shutdown: id 10, 5 inflight 7200 sec" in text
    leaks = text[text.index("leaks --pool 10;") :]
    assert "1 parked, 1 cached, 3 leaked" in leaks.split("```")[0]
    assert re.search(r"net_iov +- +leaked", text)
    assert "(docs/guide.md)" in (ROOT / "README.md").read_text()


def test_the_guide_and_the_readme_show_the_drgn_plugin():
    # %pools at drgn's prompt; piped into drgn, the same through run_command().
    text = GUIDE.read_text()
    session = text[text.index("### Inside a drgn session") :].split("```")[1]
    assert "%pools" in text and "| drgn -q -c fixtures/" in session
    assert "4 pools (1 listed, 1 orphaned, 2 invisible)" in session  # it ran, as the CLI does
    readme = (ROOT / "README.md").read_text()
    assert ">>> %pools --state detached" in readme and 'run_command(prog, "pools' in readme


def test_make_guide_rewrites_stale_outputs(tmp_path):
    stale = (
        "Intro.\n\n```console\n$ netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed "
        'pool 10 --json; echo "exit status: $?"\nold output\n'
        "$ echo shell | tr a-z A-Z\nold\n```\n\nEnd.\n"
    )
    fresh = make_guide().regenerate(stale)
    assert fresh.startswith("Intro.\n\n```console\n$ netmem-probe") and fresh.endswith(
        "```\n\nEnd.\n"
    )
    assert "old output" not in fresh and "\nold\n" not in fresh
    assert '"id": 10' in fresh and "exit status: 1\n$ echo shell" in fresh
    assert "SHELL\n```" in fresh
