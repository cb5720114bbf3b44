"""One module per subcommand; each defines a click command named after it."""

from typing import List

import click

from netmem_probe.commands.check import check
from netmem_probe.commands.decode import decode
from netmem_probe.commands.export import export
from netmem_probe.commands.holders import holders
from netmem_probe.commands.layout import layout
from netmem_probe.commands.leaks import leaks
from netmem_probe.commands.niovs import niovs
from netmem_probe.commands.pages import pages
from netmem_probe.commands.pools import pool, pools
from netmem_probe.commands.providers import providers
from netmem_probe.commands.triage import triage

# Reports over one target, each with a --drgn equivalent (tests walk them all).
COMMANDS: List[click.Command] = [
    pools,
    pool,
    decode,
    layout,
    pages,
    holders,
    leaks,
    providers,
    niovs,
]

# Fleet commands, for operators: a verdict over the reports above (check),
# a metrics exporter (export), check over many dumps (triage).
# They have no --drgn equivalent; their parts do.
FLEET_COMMANDS: List[click.Command] = [check, export, triage]
