"""
Help that teaches: every command's --help ends with EXAMPLES of real
invocations, each of which the CLI parses, and those on a bundled fixture
run; click's shell completion works.
"""

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import click
import pytest
from conftest import ROOT, run_cli

from netmem_probe.cli import cli, main
from netmem_probe.commands import COMMANDS

NETMEM_PROBE = Path(sys.executable).parent / "netmem-probe"
EVERY = [cli, *COMMANDS]


def examples(command: click.Command) -> List[Tuple[str, str]]:
    """(command line, explanation) of each example of a command's epilog."""
    lines = (command.epilog or "").splitlines()
    assert "EXAMPLES:" in lines, f"{command.name} has no EXAMPLES"
    out: List[Tuple[str, str]] = []
    pending = ""
    for line in lines[lines.index("EXAMPLES:") + 1 :]:
        if not line.strip():
            break
        if line.startswith("  ") and not line.startswith("    "):
            pending = line.strip()
        elif pending.endswith("|"):  # a pipeline that goes on
            pending += " " + line.strip()
        elif pending:
            out.append((pending, line.strip()))
            pending = ""
    return out


def invocations(line: str) -> Iterator[List[str]]:
    """The netmem-probe argument lists of a shell line (pipes, sudo, xargs)."""
    line = re.sub(r"\$\([^)]*\)", "X", line)  # $(uname -r)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segment: List[str] = []
    for token in [*lexer, "|"]:
        if token != "|":
            segment.append(token)
            continue
        words = segment[: segment.index(">")] if ">" in segment else segment
        segment = []
        piped = bool(words) and words[0] == "xargs"
        while words and words[0] in ("sudo", "xargs"):
            words = words[1:]
        if words and words[0] == "netmem-probe":
            # xargs supplies the values the command line leaves out.
            yield words[1:] + (["0x1"] if piped else [])


def parse(args: List[str]) -> str:
    """Parse a command line as netmem-probe would, without running it; its command."""
    ctx = cli.make_context("netmem-probe", list(args))
    # click 8.2 keeps the subcommand's words in _protected_args, click 8.1
    # (the newest for Python 3.9) in protected_args.
    protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
    rest = [*protected, *ctx.args]
    name, command, rest = cli.resolve_command(ctx, rest)
    assert name is not None and command is not None, args
    command.make_context(name, rest, parent=ctx)
    return name


@pytest.mark.parametrize("command", EVERY, ids=lambda c: c.name)
def test_help_ends_with_examples(command):
    args = ["--help"] if command is cli else [command.name, "--help"]
    result = run_cli(*args)
    assert result.code == 0, result
    lines = result.out.rstrip("\n").splitlines()
    start = lines.index("  EXAMPLES:")
    assert lines[start + 1 :] and all(line.startswith("    ") for line in lines[start + 1 :]), (
        result.out
    )
    found = examples(command)
    assert len(found) >= 2 and all(explanation for _, explanation in found)
    if command is not cli:
        assert any("fixtures/vmcore-stubs/" in line for line, _ in found), (
            "no example a user can try without root"
        )


def test_a_bad_example_would_not_parse():
    with pytest.raises(click.UsageError):
        parse(["-f", "x", "pools", "--no-such-option"])
    assert list(invocations("a | sudo netmem-probe pools > x.json | b")) == [["pools"]]


@pytest.mark.parametrize("command", EVERY, ids=lambda c: c.name)
def test_every_example_parses(command):
    for line, _ in examples(command):
        argvs = list(invocations(line))
        assert argvs, line
        for argv in argvs:
            try:
                name = parse(argv)
            except click.ClickException as e:
                pytest.fail(f"{line}: {e.format_message()}")
            assert command is cli or name == command.name or "|" in line, line


def _fixture_examples() -> List[Tuple[str, List[str]]]:
    out: List[Tuple[str, List[str]]] = []
    for command in EVERY:
        for line, _ in examples(command):
            if "fixtures/vmcore-stubs/" in line and "|" not in line and "-" not in line.split():
                out.extend((line, argv) for argv in invocations(line))
    return out


FIXTURE_EXAMPLES = _fixture_examples()


@pytest.mark.parametrize(
    "line,argv", FIXTURE_EXAMPLES, ids=[" ".join(argv[2:]) for _, argv in FIXTURE_EXAMPLES]
)
def test_fixture_examples_run(line, argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_cli(*argv)
    assert result.code in (0, 1), result
    assert result.out.strip(), result
    # An example naming an object the fixture no longer has goes stale
    # silently otherwise (addresses move when a scenario changes).
    assert not [row for row in result.out.splitlines() if row.split()[:1] == ["error"]], result
    if "--drgn" in argv:
        ast.parse(result.out)


def _complete(monkeypatch, capsys, **env: str) -> str:
    """What the netmem-probe entry point prints with click's completion variables set."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_shell_completion_scripts_and_completions(monkeypatch, capsys):
    script = _complete(monkeypatch, capsys, _NETMEM_PROBE_COMPLETE="bash_source")
    assert "_netmem_probe_completion()" in script
    assert "complete -o nosort -F _netmem_probe_completion netmem-probe" in script
    assert "#compdef netmem-probe" in _complete(
        monkeypatch, capsys, _NETMEM_PROBE_COMPLETE="zsh_source"
    )
    assert "complete --no-files --command netmem-probe" in _complete(
        monkeypatch, capsys, _NETMEM_PROBE_COMPLETE="fish_source"
    )
    words = _complete(
        monkeypatch,
        capsys,
        _NETMEM_PROBE_COMPLETE="bash_complete",
        COMP_WORDS="netmem-probe po",
        COMP_CWORD="1",
    )
    assert words.split() == ["plain,pool", "plain,pools"]
    states = _complete(
        monkeypatch,
        capsys,
        _NETMEM_PROBE_COMPLETE="bash_complete",
        COMP_WORDS="netmem-probe pools --state ",
        COMP_CWORD="3",
    )
    assert "plain,detached" in states.split()


def test_the_readme_bash_line_completes_in_bash():
    # What the README says to put in ~/.bashrc, then what bash does on <Tab>.
    script = (
        'eval "$(_NETMEM_PROBE_COMPLETE=bash_source netmem-probe)"\n'
        "COMP_WORDS=(netmem-probe pools --wa); COMP_CWORD=2\n"
        "_netmem_probe_completion netmem-probe\n"
        'echo "${COMPREPLY[@]}"\n'
    )
    path = f"{NETMEM_PROBE.parent}:{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["--watch"], result
    assert (
        'eval "$(_NETMEM_PROBE_COMPLETE=bash_source netmem-probe)"'
        in (ROOT / "README.md").read_text()
    )
