"""``netmem-probe pools`` and ``pool``: every page pool, and one in depth."""

from typing import Any, Dict, List, Optional

import click

from netmem_probe.commands.watch import watch_pools
from netmem_probe.context import Target
from netmem_probe.kernel.page_pool import STAT_NAMES, PagePoolInfo, PagePoolScanner
from netmem_probe.report import emit_json, emit_table, hexaddr, human_bytes, human_seconds
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.pools import pool_code, pools_code

POOLS_EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed pools
      every pool of a bundled fixture
  sudo netmem-probe pools --state detached --sort inflight
      pools whose driver destroyed them but which still wait for pages
  netmem-probe -c vmcore -s vmlinux pools --json > pools.json
      JSON with netlink's attribute names; diff it against
      ynl --family netdev --dump page-pool-get --output-json
  netmem-probe pools --netdev eth0 --inflight-only
      eth0's pools that have pages out
  sudo netmem-probe pools --watch 5 --netdev eth0
      refresh every 5 seconds, like top: in-flight change and counter
      rates per pool, GROWING where in flight only rises (Ctrl-C quits)
  netmem-probe -c vmcore -s vmlinux pools --state detached --drgn > detached.py
      the same rows as plain drgn code, to read and adapt; run it with
      drgn -c vmcore -s vmlinux detached.py
"""

POOL_EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed pool 3
      pool 3: where its in-flight pages sit, and its stats
  netmem-probe -c vmcore -s vmlinux pool 0xffff8880061c9000
      the same, by the pool's address (as in a kernel log line)
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed pool 10 --drgn
      the drgn code that computes it: xa_load(), ptr_ring slots, per-CPU stats
"""

STATES = ("listed", "orphaned", "invisible", "unreachable", "detached")
SORTS = {
    "id": lambda p: p.id,
    "inflight": lambda p: -p.inflight,
    "detach-age": lambda p: -(p.detach_age or -1),
}


def pool_record(info: PagePoolInfo) -> Dict[str, Any]:
    """A pool as JSON: netlink's names (omitted where netlink omits them) first."""
    rec: Dict[str, Any] = {"id": info.id}
    netdev = info.netdev
    if info.state == "listed" and netdev is not None and netdev.ifindex != 1:
        rec["ifindex"] = netdev.ifindex
    if info.napi_id:
        rec["napi-id"] = info.napi_id
    rec["inflight"] = info.inflight
    rec["inflight-mem"] = info.inflight_mem
    if info.detach_time is not None:
        rec["detach-time"] = info.detach_time
    if info.dmabuf is not None:
        rec["dmabuf"] = info.dmabuf
    if info.io_uring is not None:
        rec["io-uring"] = info.io_uring
    rec.update(
        {
            "address": hexaddr(info.address),
            "state": info.state,
            "detached": info.detached,
            "detach-age": info.detach_age,
            "netdev": netdev.name if netdev else None,
            "orig-netdev": info.orig_netdev,
            "netns": netdev.netns if netdev else None,
            "queue": info.queue,
            "driver": netdev.driver if netdev and info.state == "listed" else None,
            "order": info.order,
            "pool-size": info.pool_size,
            "nid": info.nid,
            "cpuid": info.cpuid,
            "flags": info.flags,
            "dma-map": info.dma_map,
            "hold": info.hold,
            "release": info.release,
            "destroy-cnt": info.destroy_cnt,
        }
    )
    return rec


def _netdev_cell(info: PagePoolInfo) -> str:
    if info.netdev is not None:
        name = info.netdev.name
        return f"{name} (was {info.orig_netdev})" if info.orig_netdev else name
    if info.system:
        return f"(system cpu{info.cpuid})" if info.cpuid >= 0 else "(system)"
    return "-"


def _row(info: PagePoolInfo, rec: Dict[str, Any]) -> Dict[str, Any]:
    state = info.state + (",detached" if info.detached else "")
    provider = None
    if info.provider == "dmabuf":
        provider = f"dmabuf:{info.dmabuf}"
    elif info.provider:
        provider = info.provider
    return {
        "id": info.id,
        "state": state,
        "netdev": _netdev_cell(info),
        "ifindex": rec.get("ifindex"),
        "napi": rec.get("napi-id"),
        "queue": info.queue,
        "driver": rec["driver"],
        "inflight": info.inflight,
        "mem": human_bytes(info.inflight_mem),
        "detached": human_seconds(info.detach_age) + " ago"
        if info.detach_age is not None
        else ("yes" if info.detached else None),
        "provider": provider,
        "address": rec["address"],
    }


def _selected(
    info: PagePoolInfo, netdev: Optional[str], states: List[str], inflight_only: bool
) -> bool:
    if (
        netdev is not None
        and (info.netdev is None or info.netdev.name != netdev)
        and (info.orig_netdev != netdev)
    ):
        return False
    if states and not any(s == info.state or (s == "detached" and info.detached) for s in states):
        return False
    return not (inflight_only and info.inflight == 0)


def _notes(infos: List[PagePoolInfo]) -> None:
    for info in infos:
        for warning in info.warnings:
            click.echo(f"netmem-probe: note: pool {info.id}: {warning}", err=True)


@click.command(epilog=POOLS_EXAMPLES)
@click.option("--netdev", metavar="NAME", help="only pools of this netdev (or orphaned from it)")
@click.option(
    "--state",
    "states",
    type=click.Choice(STATES),
    multiple=True,
    help="only pools in this state (repeatable)",
)
@click.option("--sort", type=click.Choice(sorted(SORTS)), default="id", show_default=True)
@click.option(
    "--all/--inflight-only",
    "show_all",
    default=True,
    show_default=True,
    help="show every pool, or only pools with pages in flight",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="print a JSON array (with --watch: JSON Lines, a pool per refresh)",
)
@click.option(
    "--watch",
    type=float,
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="live kernel: refresh every SECONDS (2), like top, with the change of "
    "each pool's in flight and per-second rates of its counters",
)
@click.option(
    "-n",
    "--iterations",
    type=click.IntRange(min=1),
    metavar="N",
    help="with --watch: stop after N refreshes (default: at Ctrl-C)",
)
@drgn_option(pools_code)
@click.pass_obj
def pools(
    target: Target,
    netdev: Optional[str],
    states: List[str],
    sort: str,
    show_all: bool,
    as_json: bool,
    watch: Optional[float],
    iterations: Optional[int],
) -> int:
    """Every page pool in the kernel: listed, orphaned and invisible ones.

    Pools come from the kernel's page_pools registry, so pools netlink cannot
    show (no netdev, namespace gone) are here too. Exit code 1 when a
    detached pool still has pages in flight.

    With --watch (a live kernel only), the pools are read again at every
    refresh; GROWING marks a pool whose in flight has not fallen in any
    interval and has risen, over two intervals or more.
    """
    if iterations is not None and watch is None:
        raise click.UsageError("--iterations needs --watch")
    if watch is not None:
        return watch_pools(
            target,
            watch,
            iterations,
            lambda info: _selected(info, netdev, states, not show_all),
            SORTS[sort],
            as_json,
        )
    scanner = PagePoolScanner(target.prog, target.problems)
    infos = sorted(
        (i for i in scanner.pools() if _selected(i, netdev, states, not show_all)), key=SORTS[sort]
    )
    _notes(infos)
    records = [pool_record(i) for i in infos]
    if as_json:
        emit_json(records)
    else:
        emit_table(
            [_row(i, r) for i, r in zip(infos, records)],
            [
                "id",
                "state",
                "netdev",
                "ifindex",
                "napi",
                "queue",
                "driver",
                "inflight",
                "mem",
                "detached",
                "provider",
                "address",
            ],
        )
        click.echo(_summary(infos, target))
    stalled = [i for i in infos if i.detached and i.inflight]
    return target.finish(findings=bool(stalled))


def _summary(infos: List[PagePoolInfo], target: Target) -> str:
    counts = {state: sum(1 for i in infos if i.state == state) for state in STATES[:4]}
    detached = [i for i in infos if i.detached]
    text = f"{len(infos)} pools ({', '.join(f'{n} {s}' for s, n in counts.items() if n)})"
    text += f", {sum(i.inflight for i in infos)} pages in flight"
    if detached:
        text += (
            f"; {len(detached)} detached, still waiting for "
            f"{sum(i.inflight for i in detached)} pages"
        )
    return f"{text} [{target.describe()}]"


def _find_pool(target: Target, scanner: PagePoolScanner, key: str) -> PagePoolInfo:
    try:
        wanted = int(key, 16) if key.lower().startswith("0x") else int(key, 10)
    except ValueError:
        raise click.BadParameter(
            f"{key!r} is neither a pool id nor an address", param_hint="POOL"
        ) from None
    by_address = key.lower().startswith("0x")
    for info in scanner.pools():
        if (info.address if by_address else info.id) == wanted:
            return info
    raise target.not_found(
        f"no page pool with {'address' if by_address else 'id'} {key}", param_hint="POOL"
    )


@click.command(epilog=POOL_EXAMPLES)
@click.argument("pool_key", metavar="POOL")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option(
    "--holders",
    "with_holders",
    is_flag=True,
    help="also search memory for what holds each in-flight page: counts by holder "
    "kind and what would release them (one memmap scan and one memory search)",
)
@drgn_option(pool_code)
@click.pass_obj
def pool(target: Target, pool_key: str, as_json: bool, with_holders: bool) -> int:
    """One page pool by id or address: its state, where its in-flight pages
    sit (alloc cache, ring, DMA-mapped, out), and its statistics; with
    --holders, who holds them and what releases them."""
    scanner = PagePoolScanner(target.prog, target.problems)
    info, breakdown = scanner.breakdown(_find_pool(target, scanner, pool_key))
    _notes([info])
    rec = pool_record(info)
    rec["breakdown"] = breakdown
    rec["stats"] = scanner.stats(info)
    if with_holders:
        from netmem_probe.kernel.summary import pool_holders

        summary = pool_holders(target.prog, target.problems, info)
        rec["holders"] = summary.record() if summary is not None else None
    if as_json:
        emit_json(rec)
    else:
        _print_pool(rec)
    return target.finish(findings=info.detached and info.inflight > 0)


def _print_pool(rec: Dict[str, Any]) -> None:
    click.echo(f"page pool {rec['id']} at {rec['address']}")
    for key, value in rec.items():
        if key in ("id", "address", "breakdown", "stats", "holders"):
            continue
        click.echo(f"  {key:<24} {'-' if value is None else value}")
    click.echo("  in flight, as the pool sees it:")
    for key, value in rec["breakdown"].items():
        click.echo(f"    {key:<22} {'n/a' if value is None else value}")
    if "holders" in rec:
        click.echo("  who holds them:")
        holders = rec["holders"]
        if holders is None:
            click.echo("    n/a (a memory provider's pool: see providers)")
        else:
            for kind, n in holders["holder-kinds"].items():
                click.echo(f"    {kind:<22} {n}")
            for release in holders["release"]:
                click.echo(f"    to release {release['pages']}: {release['action']}")
    click.echo("  stats:")
    if rec["stats"] is None:
        click.echo("    n/a (CONFIG_PAGE_POOL_STATS off)")
        return
    for key in STAT_NAMES:
        value = rec["stats"][key]
        click.echo(f"    {key:<22} {'unknown' if value is None else value}")
