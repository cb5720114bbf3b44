"""``netmem-probe holders``: who references a page or a net_iov."""

from typing import Any, Dict, List, Optional, Sequence

import click

from netmem_probe.context import Target, netmem_arguments
from netmem_probe.kernel.actors import Owner
from netmem_probe.kernel.holders import Holder, HolderSearch, make_target
from netmem_probe.kernel.page_pool import PagePoolInfo
from netmem_probe.kernel.search import SearchOptions
from netmem_probe.kernel.skbs import find_skb_slabs
from netmem_probe.report import emit_json, hexaddr
from netmem_probe.report.progress import Progress
from netmem_probe.report.table import Column, Table, table_options
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.pages import holders_code

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed holders 0xffffea0000180000
      who holds this page: skb frags and heads, their sockets and queues
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed holders 0xffff888004222801
      the same for a net_iov netmem (bit 0 set)
  netmem-probe -c vmcore -s vmlinux holders 0xffff8c6942a35000 --json
      a direct-map address: the page it lies in
  netmem-probe -c vmcore -s vmlinux pages --pool 19 --json | jq -r .page |
      netmem-probe -c vmcore -s vmlinux holders -
      holders of every page a stalled pool waits for, in one search
      (- reads the values from standard input, as decode does)
"""

#: The key of a record's struct address, by its kind.
ADDRESS_KEY = {"page": "page", "net_iov": "net-iov"}

COLUMNS = [
    Column("kind"),
    Column("address"),
    Column("skb"),
    Column("frag", number=True),
    Column("sock"),
    Column("queue"),
    Column("token", number=True),
    Column("family"),
    Column("local"),
    Column("remote"),
    Column("netdev"),
    Column("driver"),
    Column("rx-queue", number=True),
    Column("slot", number=True),
    Column("pool-id", number=True),
    Column("detail", free_text=True),
    Column("value"),
    Column("netns", number=True),
]
# The driver is in the detail of an rx-ring reference.
DEFAULT_COLUMNS = [c.name for c in COLUMNS if c.name not in ("driver", "value", "netns")]


jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="processes to search RAM with (default: one per CPU this process may use)",
)


def owner_record(owner: Owner) -> Dict[str, Any]:
    """A process holding a descriptor, as JSON."""
    return {
        "pid": owner.pid,
        "comm": owner.comm,
        "fd": owner.fd,
        "cgroup": owner.cgroup,
        "netns": owner.netns,
    }


def holder_record(holder: Holder) -> Dict[str, Any]:
    """A reference as JSON; socket fields are null when no socket is known."""
    sock = holder.sock
    return {
        "kind": holder.kind,
        "address": hexaddr(holder.address),
        "value": hexaddr(holder.value),
        "skb": hexaddr(holder.skb),
        "frag": holder.frag,
        "sock": hexaddr(sock.address) if sock else None,
        "queue": holder.queue,
        "family": sock.family if sock else None,
        "local": sock.local if sock else None,
        "remote": sock.remote if sock else None,
        "netns": sock.netns if sock else None,
        "protocol": sock.protocol if sock else None,
        "state": sock.state if sock else None,
        "owners": [owner_record(o) for o in holder.owners] if holder.owners is not None else None,
        "release": holder.release,
        "token": holder.token,
        "netdev": holder.netdev,
        "driver": holder.rx_slot.driver if holder.rx_slot else None,
        "rx-queue": holder.rx_slot.queue if holder.rx_slot else None,
        "slot": holder.rx_slot.slot if holder.rx_slot else None,
        "pool-id": holder.pool_id,
        "slab-cache": holder.slab.cache if holder.slab else None,
        "slab-object": hexaddr(holder.slab.object) if holder.slab else None,
        "pointed-from": list(holder.pointed_from) if holder.pointed_from is not None else None,
        "module": holder.static.module if holder.static else None,
        "symbol": holder.static.place if holder.static and holder.static.symbol else None,
        "detail": holder.detail,
    }


@click.command(epilog=EXAMPLES)
@click.argument("netmem", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@table_options(COLUMNS, DEFAULT_COLUMNS)
@jobs_option
@drgn_option(holders_code)
@click.pass_obj
def holders(
    target: Target, netmem: Sequence[str], as_json: bool, table: Table, jobs: Optional[int]
) -> int:
    """Who references pages or net_iovs (NETMEM values, struct page or
    direct-map addresses; - reads more from standard input).

    Searches kernel memory (every RAM range, through the direct map) for the
    netmem_ref, the struct page or net_iov pointer and, for a page, pointers
    into its memory, then names each reference: an skb frag or head (with
    its socket, queue and netdev), the pool's alloc cache or ring, a
    devmem TCP token (with its socket), a net_iov area, or unknown. One
    search covers every value given. Exit code 1 when something is held by
    nothing: no skb, no pool cache or ring slot, no token, and no DMA
    mapping of a pool that is not detached.
    """
    targets = []
    for value in netmem_arguments(netmem, target):
        try:
            found_target = make_target(target.prog, value, target.problems)
        except ValueError as e:
            raise target.not_found(f"{value:#x}: {e}", param_hint="NETMEM") from e
        if found_target is not None:  # else undecidable, recorded in problems
            targets.append(found_target)
    progress = Progress("searching RAM", "bytes")
    try:
        search = HolderSearch(
            target.prog, target.problems, search=SearchOptions(jobs=jobs, progress=progress)
        )
        found = search.find(targets, find_skb_slabs(target.prog, target.problems))
    finally:
        progress.close()
    records = []
    unheld = 0
    for t in targets:
        pool = search.pools.get(t.pool) if t.pool else None
        unheld += not _held(found[t.netmem], pool)
        records.append(
            {
                "netmem": hexaddr(t.netmem),
                "kind": t.kind,
                ADDRESS_KEY[t.kind]: hexaddr(t.address),
                "pool-id": t.pool_id,
                # The pool's netdev, for holders whose skb->dev is gone (UDP
                # reuses it as dev_scratch).
                "pool-netdev": _pool_netdev(pool),
                "holders": table.sorted([holder_record(h) for h in found[t.netmem]]),
            }
        )
    if as_json:
        emit_json(records)
    else:
        _print(records, table)
    return target.finish(findings=bool(unheld))


def _held(found: Sequence[Holder], pool: Optional[PagePoolInfo]) -> bool:
    """
    Whether something holds the target: a reference that holds it (an skb,
    a live slot of its pool's cache or ring), or, for a pool its driver
    still runs (not detached), the pool's own record of the page's DMA
    mapping: the pool handed the page out to that driver and counts it in
    flight.  A detached pool's mapping alone holds nothing (``leaks`` calls
    that page leaked).
    """
    if any(h.holds for h in found):
        return True
    return (
        pool is not None and not pool.detached and any(h.kind == "pool-dma-mapped" for h in found)
    )


def _pool_netdev(pool: Optional[PagePoolInfo]) -> Optional[str]:
    if pool is None or pool.netdev is None:
        return None
    if pool.orig_netdev:
        return f"{pool.netdev.name} (was {pool.orig_netdev})"
    return pool.netdev.name


def _print(records: List[Dict[str, Any]], table: Table) -> None:
    for i, rec in enumerate(records):
        if i:
            click.echo()
        what = "struct page" if rec["kind"] == "page" else "struct net_iov"
        pool = f", pool {rec['pool-id']}" if rec["pool-id"] is not None else ""
        if rec["pool-netdev"]:
            pool += f" of {rec['pool-netdev']}"
        click.echo(f"netmem {rec['netmem']}: {what} {rec[ADDRESS_KEY[rec['kind']]]}{pool}")
        if rec["holders"]:
            # Only the columns some reference fills: a page in a pool's cache
            # has no socket to show.
            shown = table.defaults(
                [
                    c
                    for c in COLUMNS
                    if c.name in DEFAULT_COLUMNS
                    and (
                        c.name in ("kind", "address")
                        or any(h[c.name] is not None for h in rec["holders"])
                    )
                ]
            )
            shown.print(rec["holders"])
        else:
            click.echo("  no reference found in kernel memory")
