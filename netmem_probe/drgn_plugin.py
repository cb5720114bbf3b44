"""
drgn plugin: netmem-probe's subcommands as drgn CLI commands.

Installed as the ``netmem_probe`` entry point of the ``drgn.plugins`` group,
so inside ``drgn -c vmcore -s vmlinux`` (or live) ``%pools``, ``%decode
0x...`` and the rest run on the Program drgn already opened, with the same
options and the same output as the standalone ``netmem-probe`` command.
"""

from typing import Any, Sequence

from drgn import Program
from drgn.commands import CommandExitStatusError, custom_command, parse_shell_command

__all__ = ()

# name -> one-line description; kept here (not imported from the CLI) so that
# loading the plugin stays cheap for every drgn session.
_COMMANDS = {
    "pools": "list every page pool: listed, orphaned, invisible, detached",
    "pool": "one page pool: where its in-flight pages sit, and its stats",
    "decode": "decode netmem_ref values (struct page or struct net_iov)",
    "layout": "check struct page / netmem_desc / net_iov layout agreements",
    "pages": "scan the memmap for page-pool pages",
    "holders": "find what references a page or net_iov",
    "leaks": "pages of detached pools: parked, cached or leaked",
    "providers": "devmem and io_uring zero-copy receive memory providers",
    "niovs": "the net_iovs of a provider area or pool",
}


def _register(name: str, description: str) -> None:
    def run(prog: Program, name: str, args: Sequence[str], **kwargs: Any) -> None:
        from netmem_probe.cli import main
        from netmem_probe.context import EXIT_FINDINGS

        code = main([name, *args], program=prog)
        if code not in (0, EXIT_FINDINGS):
            raise CommandExitStatusError(name, code)

    custom_command(
        name=name,
        description=f"netmem-probe: {description}",
        usage=f"**{name}** [*OPTIONS*] (see **{name} --help**)",
        long_description=f"Runs ``netmem-probe {name}`` on this program; "
        f"``{name} --help`` shows its options and examples.",
        parse=parse_shell_command,
    )(run)


for _name, _description in _COMMANDS.items():
    _register(_name, _description)
