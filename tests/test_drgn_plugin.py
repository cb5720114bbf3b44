"""The drgn plugin: netmem-probe's commands inside a real drgn CLI session."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, run_cli

DRGN = Path(sys.executable).parent / "drgn"
FIXTURE = FIXTURES / "linux-7.3-mixed"


def drgn_session(command: str) -> str:
    """Output of ``command`` run through drgn's command machinery in a drgn CLI."""
    script = f"from drgn.commands import run_command\nrun_command(prog, {command!r})\n"
    result = subprocess.run(
        [
            str(DRGN),
            "-q",
            "--no-default-symbols",
            "-c",
            str(FIXTURE / "vmcore"),
            "-s",
            str(FIXTURE / "types.elf"),
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "command",
    [
        "pools --json",
        "pools --state detached",
        "pool 3 --json",
        "layout",
        "decode --json 0 0xffffea0000000140",
    ],
)
def test_plugin_command_prints_what_the_standalone_cli_prints(command):
    standalone = run_cli("-f", str(FIXTURE), *command.split())
    assert drgn_session(command) == standalone.out


def test_standalone_cli_skips_drgn_command_plugins_and_restores_the_environment():
    # drgn loads plugins once per process; the CLI keeps the command-only ones
    # (drgn's crash commands, this plugin) from loading, and puts
    # DRGN_DISABLE_PLUGINS back as it found it.
    script = (
        "import os, sys\n"
        "from netmem_probe.cli import main\n"
        "os.environ['DRGN_DISABLE_PLUGINS'] = 'someone_elses'\n"
        f"code = main(['-f', {str(FIXTURE)!r}, 'pools', '--json'])\n"
        "print(code, 'drgn.commands._crash' in sys.modules, "
        "'netmem_probe.drgn_plugin' in sys.modules, os.environ['DRGN_DISABLE_PLUGINS'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.splitlines()[-1] == "1 False False someone_elses", result.stderr
