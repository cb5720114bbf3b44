"""``netmem-probe niovs``: every net_iov of the provider areas, one row each."""

from typing import Any, Dict, List, Optional, Sequence

import click

from netmem_probe.commands.providers import make_scanner, ring_options
from netmem_probe.context import Target
from netmem_probe.kernel.areas import ProviderArea
from netmem_probe.kernel.niovs import NIOV_STATES, NiovInfo
from netmem_probe.kernel.providers import ProviderScanner
from netmem_probe.report import emit_json_line, hexaddr
from netmem_probe.report.table import Column, Table, table_options
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.providers import niovs_code

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed niovs --area dmabuf:1
      every niov of dma-buf binding 1
  sudo netmem-probe niovs --pool 12 --state user --json
      the zcrx buffers of pool 12 that user space has not returned,
      as JSON Lines
  netmem-probe -c vmcore -s vmlinux niovs --area 0xffff888004210f40
      one zcrx area, by address (from the providers table)
"""

COLUMNS = [
    Column("chunk", number=True, width=5),
    Column("index", number=True, width=6),
    Column("net-iov", width=18),
    Column("state", width=6),
    Column("pool-id", number=True, width=7),
    Column("pp-ref-count", number=True, largest_first=True, width=7),
    Column("user-refs", number=True, largest_first=True, width=9),
    Column("dma-addr", width=18),
    Column("offset", number=True, width=10),
    Column("netmem", width=18),
    Column("area"),
    Column("kind"),
]
DEFAULT_COLUMNS = [c.name for c in COLUMNS[:9]]


def niov_record(niov: NiovInfo) -> Dict[str, Any]:
    """A niov as JSON."""
    return {
        "area": niov.area.key,
        "kind": niov.area.kind,
        "chunk": niov.span.chunk,
        "index": niov.index,
        "net-iov": hexaddr(niov.address),
        "netmem": hexaddr(niov.netmem),
        "state": niov.state,
        "pool-id": niov.pool_id,
        "pp-ref-count": niov.pp_ref_count,
        "user-refs": niov.user_refs,
        "dma-addr": hexaddr(niov.dma_addr),
        "offset": niov.offset,
    }


def _select(
    target: Target, scanner: ProviderScanner, area_key: Optional[str], pool_id: Optional[int]
) -> List[ProviderArea]:
    if area_key is not None and pool_id is not None:
        raise click.UsageError("--area and --pool are mutually exclusive")
    if pool_id is not None:
        areas = scanner.areas_of_pool(pool_id)
        if not areas:
            raise target.not_found(f"no page pool {pool_id} filled by a memory provider", "--pool")
        return areas
    if area_key is None:
        return scanner.areas()
    try:
        areas = scanner.find(area_key)
    except ValueError:
        raise click.BadParameter(
            f"{area_key!r} is not dmabuf:ID, io_uring:ID or an address", param_hint="--area"
        ) from None
    if not areas:
        raise target.not_found(
            f"no provider area {area_key} (see netmem-probe providers)", "--area"
        )
    if len(areas) > 1 and not area_key.lower().rpartition(":")[2].startswith("0x"):
        # zcrx area ids count from 0 in each ifq: an id alone may name several.
        candidates = ", ".join(
            f"{a.key} ({a.netdev.name if a.netdev else 'no netdev'})" for a in areas
        )
        raise click.BadParameter(
            f"{area_key} names {len(areas)} areas: {candidates}; name one by its address",
            param_hint="--area",
        )
    return areas


def _heading(area: ProviderArea) -> str:
    where = area.netdev.name if area.netdev else "no netdev"
    if area.queues:
        where += (
            " queue" + ("s " if len(area.queues) > 1 else " ") + ",".join(map(str, area.queues))
        )
    pools = ",".join(map(str, area.pools)) or "none"
    return (
        f"{area.key} ({area.kind} {area.id}, {where}, pools {pools}): "
        f"{area.num_niovs} niovs of {1 << area.niov_shift} bytes"
    )


@click.command(epilog=EXAMPLES)
@click.option(
    "--area",
    "area_key",
    metavar="AREA",
    help="only this area: dmabuf:ID, io_uring:ID or an address",
)
@click.option(
    "--pool",
    "pool_id",
    type=int,
    metavar="ID",
    help="only the areas of the provider filling page pool ID",
)
@click.option(
    "--state",
    "states",
    type=click.Choice(NIOV_STATES),
    multiple=True,
    help="only niovs in this state (repeatable)",
)
@ring_options
@click.option("--json", "as_json", is_flag=True, help="print JSON Lines, one niov per line")
@table_options(COLUMNS, DEFAULT_COLUMNS)
@drgn_option(niovs_code)
@click.pass_obj
def niovs(
    target: Target,
    area_key: Optional[str],
    pool_id: Optional[int],
    states: Sequence[str],
    rings: Sequence[str],
    scan_files: bool,
    as_json: bool,
    table: Table,
) -> int:
    """Every net_iov of the memory provider areas, one row each, as it is read.

    A niov is free (back with its provider), in a page pool's alloc cache or
    ring, held by the stack (driver rx rings, skbs, sockets), or held by
    user space (zcrx user_refs).  NETMEM is the netmem_ref that names it
    (its address with the NET_IOV bit), OFFSET its offset in the dma-buf or
    zcrx area.
    """
    scanner = make_scanner(target, rings, scan_files)
    areas = _select(target, scanner, area_key, pool_id)
    for area in areas:
        records = (
            niov_record(niov) for niov in scanner.niovs(area) if not states or niov.state in states
        )
        if as_json:
            for rec in table.sorted(records) if table.sort else records:
                emit_json_line(rec)
            continue
        click.echo(_heading(area))
        for _ in table.stream(records, indent="  "):
            pass
    return target.finish(findings=False)
