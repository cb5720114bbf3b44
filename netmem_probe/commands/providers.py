"""``netmem-probe providers``: devmem dma-buf bindings and io_uring zcrx areas."""

from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

import click

from netmem_probe.commands.holders import owner_record
from netmem_probe.context import Target
from netmem_probe.kernel.areas import ProviderArea
from netmem_probe.kernel.providers import ProviderScanner
from netmem_probe.kernel.structs import member_exists
from netmem_probe.report import emit_json, hexaddr, human_bytes
from netmem_probe.report.table import Column, Table, table_options
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.providers import providers_code

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed providers
      every binding and zcrx area of a bundled fixture
  sudo netmem-probe providers --json
      the same for the running kernel, as a JSON array
  netmem-probe -c vmcore -s vmlinux providers --ring 0xffff888012345000
      add the zcrx areas of an io_uring ring (e.g. a ZCRX_REG_NODEV one
      whose task's files are not in the dump)
"""

TOTALS = ("free", "in-pool", "stack", "user")


Command = TypeVar("Command", bound=Callable[..., Any])


def ring_options(command: Command) -> Command:
    """The options every provider command shares: extra rings, file scan."""
    command = click.option(
        "--ring",
        "rings",
        metavar="ADDRESS",
        multiple=True,
        help="also the zcrx ifqs of this struct io_ring_ctx (repeatable)",
    )(command)
    return click.option(
        "--scan-files/--no-scan-files",
        default=True,
        show_default=True,
        help="look for io_uring rings in every task's open files (finds zcrx "
        "ifqs that have no page pool)",
    )(command)


def make_scanner(target: Target, rings: Sequence[str], scan_files: bool) -> ProviderScanner:
    """A ProviderScanner over the target, with the ``--ring`` addresses checked."""
    addresses = []
    for text in rings:
        try:
            addresses.append(int(text, 0))
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an address", param_hint="--ring") from None
    prog = target.prog
    if addresses:
        try:
            ctx = prog.type("struct io_ring_ctx")
            usable = member_exists(ctx, "zcrx_ctxs") or member_exists(ctx, "ifq")
        except LookupError:
            usable = False
        if not usable:
            raise click.BadParameter(
                "this kernel's io_uring rings have no zcrx ifqs", param_hint="--ring"
            )
    try:
        prog.type("struct net_iov")
    except LookupError:
        # Memory providers and their net_iovs came with devmem TCP (v6.12).
        click.echo(
            "netmem-probe: note: this kernel has no memory providers and no "
            "struct net_iov (Linux 6.12+): nothing to list",
            err=True,
        )
    return ProviderScanner(prog, target.problems, rings=addresses, scan_files=scan_files)


def provider_record(area: ProviderArea, totals: Dict[str, int]) -> Dict[str, Any]:
    """A provider area as JSON."""
    netdev = area.netdev
    return {
        "kind": area.kind,
        "id": area.id,
        "area": area.key,
        "address": hexaddr(area.address),
        "ifq": hexaddr(area.ifq),
        "netdev": netdev.name if netdev else None,
        "ifindex": netdev.ifindex if netdev else None,
        "queues": list(area.queues),
        "pools": list(area.pools),
        "refcount": area.refcount,
        "direction": area.direction,
        "niov-size": 1 << area.niov_shift,
        "size": area.size,
        "chunks": len(area.spans) if area.kind == "dmabuf" else None,
        "niovs": area.num_niovs,
        **{key: totals[key] for key in TOTALS},
        "bytes": area.num_niovs << area.niov_shift,
        "inconsistent": totals["inconsistent"],
        "owners": [owner_record(o) for o in area.owners] if area.owners is not None else None,
    }


def _joined(key: str) -> Callable[[Dict[str, Any]], Optional[str]]:
    return lambda rec: ",".join(map(str, rec[key])) or None


COLUMNS = [
    Column("kind"),
    Column("id", number=True),
    Column("netdev"),
    Column("queues", cell=_joined("queues")),
    Column("pools", cell=_joined("pools")),
    Column("niovs", number=True, largest_first=True),
    *(Column(key, number=True, largest_first=True) for key in TOTALS),
    Column("bytes", number=True, largest_first=True, show=human_bytes),
    Column("area"),
    Column("address"),
    Column("ifq"),
    Column("ifindex", number=True),
    Column("refcount", number=True, largest_first=True),
    Column("direction"),
    Column("niov-size", number=True, largest_first=True, show=human_bytes),
    Column("size", number=True, largest_first=True, show=human_bytes),
    Column("chunks", number=True, largest_first=True),
    Column("inconsistent", number=True, largest_first=True),
]
DEFAULT_COLUMNS = ["kind", "id", "netdev", "queues", "pools", "niovs", *TOTALS, "bytes", "area"]


@click.command(epilog=EXAMPLES)
@ring_options
@click.option("--json", "as_json", is_flag=True, help="print a JSON array")
@table_options(COLUMNS, DEFAULT_COLUMNS)
@drgn_option(providers_code)
@click.pass_obj
def providers(
    target: Target, rings: Sequence[str], scan_files: bool, as_json: bool, table: Table
) -> int:
    """Memory providers: devmem dma-buf bindings and io_uring zcrx areas.

    One row per binding (all its genpool chunks) or zcrx area, found through
    the net_devmem_dmabuf_bindings registry, the page pools and rx queues
    they fill, and io_uring rings.  Counts the niovs free, in a page pool
    (alloc cache or ring), held by the stack (driver rings, skbs, sockets),
    and held by user space (zcrx buffers not yet returned).
    """
    scanner = make_scanner(target, rings, scan_files)
    records = table.sorted([provider_record(a, scanner.totals(a)) for a in scanner.areas()])
    if as_json:
        emit_json(records)
    else:
        table.print(records)
        if table.header:
            click.echo(_summary(records, target))
    return target.finish(findings=False)


def _summary(records: List[Dict[str, Any]], target: Target) -> str:
    bindings = sum(1 for r in records if r["kind"] == "dmabuf")
    text = f"{bindings} dma-buf bindings, {len(records) - bindings} zcrx areas"
    text += f", {sum(r['niovs'] for r in records)} niovs ("
    text += ", ".join(f"{sum(r[k] for r in records)} {k}" for k in TOTALS) + ")"
    return f"{text} [{target.describe()}]"
