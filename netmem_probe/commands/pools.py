"""``netmem-probe pools`` and ``pool``: every page pool, and one in depth."""

import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import click
import drgn

from netmem_probe.commands.check import message_record
from netmem_probe.commands.watch import watch_pools
from netmem_probe.context import EXIT_PARTIAL, Target
from netmem_probe.kernel.page_pool import STAT_NAMES, PagePoolInfo, PagePoolScanner
from netmem_probe.kernel.printk import KernelLog, page_pool_messages
from netmem_probe.netlink import PAGE_POOL_GET_KEYS
from netmem_probe.report import emit_json, hexaddr, human_bytes, human_seconds, quantity
from netmem_probe.report.table import Column, Table, table_options
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.pools import pool_code, pools_code

POOLS_EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed pools
      every pool of a bundled fixture
  sudo netmem-probe pools --state detached --sort inflight
      pools whose driver destroyed them but which still wait for pages
  netmem-probe -c vmcore -s vmlinux pools --json > pools.json
      JSON with netlink's attribute names first, then what netlink lacks
  sudo netmem-probe pools --ynl > memory.json
      exactly what ynl --family netdev --dump page-pool-get --output-json
      prints (the pools netlink shows, netlink's attributes): diff the two
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

STATES = ("listed", "orphaned", "invisible", "unreachable", "unregistered", "detached")


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
            "found-by": list(info.found_by),
            "release-pending": info.release_pending,
        }
    )
    return rec


#: The pools netlink shows: those on a netdev's page_pools list.
NETLINK_STATES = ("listed", "orphaned")


def ynl_record(rec: Dict[str, Any]) -> Dict[str, Any]:
    """A pools record reduced to what ``ynl --dump page-pool-get`` prints for it."""
    return {key: rec[key] for key in PAGE_POOL_GET_KEYS if key in rec}


def ynl_stats(rec: Dict[str, Any], stats: Dict[str, Optional[int]]) -> Dict[str, Any]:
    """What ``ynl --do page-pool-stats-get`` prints for a pool: its id (and
    ifindex, unless on loopback) nested in ``info``, then the counters."""
    info = {key: rec[key] for key in ("id", "ifindex") if key in rec}
    return {"info": info, **{name: stats[name] for name in STAT_NAMES}}


def _ynl_order(info: PagePoolInfo) -> Any:
    # As the kernel dumps them: netdev by netdev (orphaned pools are on lo),
    # each netdev's list newest first (hlist_add_head()).
    netdev = info.netdev
    pool_id = info.id or 0  # shown pools are netlink's, which have ids
    return (netdev.netns or 0, netdev.ifindex, -pool_id) if netdev else (0, 0, -pool_id)


def netlink_disagreements(
    before: List[Dict[str, Any]], netlink: List[Dict[str, Any]], after: List[Dict[str, Any]]
) -> List[Dict[str, Any]]:
    """
    Where netlink's ``page-pool-get`` dump and memory disagree: ``before`` and
    ``after`` are the ``ynl_record`` of each pool netlink should show, read
    just before and after the dump (a live kernel runs on: a value counts as
    agreeing if either read has it).  One record per pool and attribute;
    ``memory`` or ``netlink`` null where that side has no such pool or key.
    """
    theirs = {p["id"]: p for p in netlink}
    first = {p["id"]: p for p in before}
    second = {p["id"]: p for p in after}
    out = []
    for pool_id in sorted(set(theirs) | (set(first) & set(second))):
        if pool_id not in theirs:
            out.append({"id": pool_id, "key": None, "memory": first[pool_id], "netlink": None})
            continue
        if pool_id not in first and pool_id not in second:
            out.append({"id": pool_id, "key": None, "memory": None, "netlink": theirs[pool_id]})
            continue
        mine = [r for r in (first.get(pool_id), second.get(pool_id)) if r is not None]
        for key in PAGE_POOL_GET_KEYS:
            value = theirs[pool_id].get(key)
            if all(r.get(key) != value for r in mine):
                out.append(
                    {"id": pool_id, "key": key, "memory": mine[-1].get(key), "netlink": value}
                )
    return out


def _check_netlink(
    target: Target, infos_now: Callable[[], Iterable[PagePoolInfo]], as_json: bool
) -> int:
    """
    ``pools --check-netlink``: the kernel's netlink against memory, in every
    network namespace this process can enter, and the pools of those it
    cannot, named.
    """
    from netmem_probe.netlink import NetlinkError, netns_files, page_pool_dump

    prog = target.prog
    if not prog.flags & drgn.ProgramFlags.IS_LIVE:
        raise click.UsageError("--check-netlink asks the running kernel: it needs a live target")
    own = os.stat("/proc/self/ns/net").st_ino

    def shown() -> Dict[int, List[Dict[str, Any]]]:
        """The pools netlink should show, by network namespace."""
        by_netns: Dict[int, List[Dict[str, Any]]] = {}
        for rec in map(pool_record, infos_now()):
            if rec["state"] in NETLINK_STATES and rec["netns"] is not None:
                by_netns.setdefault(rec["netns"], []).append(ynl_record(rec))
        return by_netns

    before = shown()
    files = netns_files()
    # Netlink answers for the namespace its socket was made in: this one, and
    # each other one entered by a file (ip netns) or a process in it.
    namespaces, dumps = [], {}
    for netns in sorted({own, *before, *files}):
        entry: Dict[str, Any] = {
            "netns": netns,
            "pools": [p["id"] for p in before.get(netns, [])],
            "netlink-pools": None,
            "error": None,
        }
        try:
            if netns == own:
                dumps[netns] = page_pool_dump(prog)
            elif netns in files:
                dumps[netns] = page_pool_dump(prog, (netns, files[netns]))
            else:
                entry["error"] = "no process is in it and no /run/netns file names it"
        except NetlinkError as error:
            if netns == own:
                raise click.ClickException(str(error)) from None
            entry["error"] = str(error)
        if netns in dumps:
            entry["netlink-pools"] = len(dumps[netns])
        namespaces.append(entry)
    after = shown()
    found = [
        {"netns": netns, **d}
        for netns, netlink in dumps.items()
        for d in netlink_disagreements(before.get(netns, []), netlink, after.get(netns, []))
    ]
    unchecked = [e for e in namespaces if e["error"] is not None and e["pools"]]
    total = sum(len(netlink) for netlink in dumps.values())
    if as_json:
        emit_json({"namespaces": namespaces, "netlink-pools": total, "disagreements": found})
    else:
        for d in found:
            if d["key"] is None:
                where = (
                    "netlink lists it, memory does not"
                    if d["memory"] is None
                    else ("memory has it on a netdev's list, netlink does not")
                )
                click.echo(f"pool {d['id']} (network namespace {d['netns']}): {where}")
            else:
                click.echo(
                    f"pool {d['id']} (network namespace {d['netns']}): {d['key']} is "
                    f"{d['memory']} in memory, {d['netlink']} in netlink"
                )
        for e in unchecked:
            click.echo(
                f"{quantity(len(e['pools']), 'pool')} ({', '.join(map(str, e['pools']))}) of "
                f"network namespace {e['netns']}: not checked: {e['error']}"
            )
        click.echo(
            f"{quantity(total, 'pool')} in netlink's dumps of "
            f"{quantity(len(dumps), 'network namespace')}, "
            f"{len({(d['netns'], d['id']) for d in found})} disagree with memory"
            + (
                f"; {quantity(sum(len(e['pools']) for e in unchecked), 'pool')} not checked"
                if unchecked
                else ""
            )
            + f" [{target.describe()}]"
        )
    code = target.finish(findings=bool(found))
    if unchecked:
        click.echo(
            f"netmem-probe: warning: the pools of {quantity(len(unchecked), 'network namespace')} "
            "were not checked: " + "; ".join(f"{e['netns']}: {e['error']}" for e in unchecked),
            err=True,
        )
        return EXIT_PARTIAL
    return code


def _print_ynl(value: Any) -> None:
    # ynl's cli prints json.dumps() of the reply: one line, default separators.
    click.echo(json.dumps(value))


def _netdev_cell(info: PagePoolInfo) -> Optional[str]:
    if info.netdev is not None:
        name = info.netdev.name
        return f"{name} (was {info.orig_netdev})" if info.orig_netdev else name
    if info.system:
        return (
            f"(system cpu{info.cpuid})"
            if info.cpuid is not None and info.cpuid >= 0
            else "(system)"
        )
    return None


def _row(info: PagePoolInfo, rec: Dict[str, Any]) -> Dict[str, Any]:
    """A pool's record with what its table row shows beyond the record."""
    provider = None
    if info.provider == "dmabuf":
        provider = f"dmabuf:{info.dmabuf}"
    elif info.provider:
        provider = info.provider
    return {**rec, "provider": provider, "netdev-cell": _netdev_cell(info), "record": rec}


def _detached_cell(rec: Dict[str, Any]) -> Optional[str]:
    if rec["detach-age"] is not None:
        return human_seconds(rec["detach-age"]) + " ago"
    return "yes" if rec["detached"] else None


def _detached_color(rec: Dict[str, Any]) -> Optional[str]:
    return "yellow" if rec["detached"] else None


def _state_cell(rec: Dict[str, Any]) -> str:
    return str(rec["state"]) + (",detached" if rec["detached"] else "")


COLUMNS = [
    Column("id", number=True),
    Column("state", cell=_state_cell, color=_detached_color),
    Column("netdev", cell=lambda r: r["netdev-cell"]),
    Column("ifindex", number=True),
    Column("napi-id", number=True),
    Column("queue", number=True),
    Column("driver"),
    Column("inflight", number=True, largest_first=True),
    Column("inflight-mem", number=True, largest_first=True, show=human_bytes),
    Column(
        "detach-age",
        header="DETACHED",
        cell=_detached_cell,
        color=_detached_color,
        number=True,
        largest_first=True,
    ),
    Column("provider"),
    Column("address"),
    Column("orig-netdev"),
    Column("netns", number=True),
    Column("order", number=True),
    Column("pool-size", number=True, largest_first=True),
    Column("nid", number=True),
    Column("cpuid", number=True),
    Column("flags", number=True),
    Column("dma-map"),
    Column("hold", number=True, largest_first=True),
    Column("release", number=True, largest_first=True),
    Column("destroy-cnt", number=True, largest_first=True),
]
DEFAULT_COLUMNS = [c.name for c in COLUMNS[:12]]


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


def _notes(
    infos: List[PagePoolInfo],
    log: Optional[KernelLog] = None,
    scanner: Optional[PagePoolScanner] = None,
) -> None:
    if scanner is not None and not scanner.registry:
        click.echo(
            "netmem-probe: note: this kernel keeps no registry of page pools (the "
            "page_pools xarray came in Linux 6.8): no pool ids, netdevs or netlink "
            "view; pools are found from the pages that name them and the slab",
            err=True,
        )
        for note in scanner.notes:
            click.echo(f"netmem-probe: note: {note}", err=True)
    for info in infos:
        for warning in info.warnings:
            click.echo(f"netmem-probe: note: pool {info.label}: {warning}", err=True)
        # the kernel log names pools by id: none before Linux 6.8
        messages = log.of_pool(info.id) if log is not None and info.id is not None else []
        if messages:
            click.echo(
                f"netmem-probe: note: pool {info.label}: the kernel log has {len(messages)} "
                f"message(s) about it, the last: {messages[-1].text.strip()!r}",
                err=True,
            )


@click.command(epilog=POOLS_EXAMPLES)
@click.option("--netdev", metavar="NAME", help="only pools of this netdev (or orphaned from it)")
@click.option(
    "--state",
    "states",
    type=click.Choice(STATES),
    multiple=True,
    help="only pools in this state (repeatable)",
)
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
@table_options(COLUMNS, DEFAULT_COLUMNS, sort="id")
@click.option(
    "--ynl",
    is_flag=True,
    help="print exactly what ynl --family netdev --dump page-pool-get --output-json "
    "prints: the pools netlink shows, netlink attributes only, in its dump order",
)
@click.option(
    "--check-netlink",
    is_flag=True,
    help="live kernel: ask its netlink (page-pool-get) in every network namespace "
    "and report every pool where netlink and memory disagree (exit code 1), and the "
    "pools of any namespace it cannot enter (exit code 4)",
)
@drgn_option(pools_code)
@click.pass_obj
def pools(
    target: Target,
    netdev: Optional[str],
    states: List[str],
    show_all: bool,
    as_json: bool,
    watch: Optional[float],
    iterations: Optional[int],
    table: Table,
    ynl: bool,
    check_netlink: bool,
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
    if ynl and (as_json or watch is not None):
        raise click.UsageError("--ynl prints netlink's dump: not with --json or --watch")
    if check_netlink:
        if ynl or watch is not None:
            raise click.UsageError("--check-netlink is not with --ynl or --watch")
        return _check_netlink(
            target,
            lambda: PagePoolScanner(target.prog, target.problems).pools(),
            as_json,
        )
    if watch is not None:
        if table.chosen:
            raise click.UsageError("--columns does not apply to --watch (its columns are fixed)")
        return watch_pools(
            target,
            watch,
            iterations,
            lambda info: _selected(info, netdev, states, not show_all),
            lambda infos: table.sorted_by(infos, lambda i: _row(i, pool_record(i))),
            as_json,
            table,
        )
    scanner = PagePoolScanner(target.prog, target.problems)
    infos = [i for i in scanner.pools() if _selected(i, netdev, states, not show_all)]
    _notes(infos, page_pool_messages(target.prog), scanner)
    rows = table.sorted([_row(i, pool_record(i)) for i in infos])
    if ynl:
        shown = sorted((i for i in infos if i.state in NETLINK_STATES), key=_ynl_order)
        _print_ynl([ynl_record(pool_record(i)) for i in shown])
    elif as_json:
        emit_json([r["record"] for r in rows])
    else:
        table.print(rows)
        if table.header:
            click.echo(_summary(infos, target))
    stalled = [i for i in infos if i.detached and i.inflight]
    return target.finish(findings=bool(stalled))


def _summary(infos: List[PagePoolInfo], target: Target) -> str:
    counts = {state: sum(1 for i in infos if i.state == state) for state in STATES[:5]}
    detached = [i for i in infos if i.detached]
    by_state = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    text = quantity(len(infos), "pool") + (f" ({by_state})" if by_state else "")
    text += f", {quantity(sum(i.inflight for i in infos), 'page')} in flight"
    if detached:
        waiting = quantity(sum(i.inflight for i in detached), "page")
        text += f"; {len(detached)} detached, still waiting for {waiting}"
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
    if by_address and not scanner.registry:
        # Idle pools no page names are still pools: read the one named.
        found = scanner.read_unregistered(wanted)
        if found is not None:
            return found
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
@click.option(
    "--ynl",
    is_flag=True,
    help="print exactly what ynl --family netdev --do page-pool-stats-get "
    '--json \'{"info": {"id": ID}}\' --output-json prints for this pool',
)
@drgn_option(pool_code)
@click.pass_obj
def pool(target: Target, pool_key: str, as_json: bool, with_holders: bool, ynl: bool) -> int:
    """One page pool by id or address: its state, where its in-flight pages
    sit (alloc cache, ring, DMA-mapped, out), and its statistics; with
    --holders, who holds them and what releases them."""
    if ynl and (as_json or with_holders):
        raise click.UsageError("--ynl prints netlink's object: not with --json or --holders")
    scanner = PagePoolScanner(target.prog, target.problems)
    info, breakdown = scanner.breakdown(_find_pool(target, scanner, pool_key))
    log = page_pool_messages(target.prog)
    _notes([info], scanner=scanner)
    rec = pool_record(info)
    rec["breakdown"] = breakdown
    rec["stats"] = scanner.stats(info)
    if with_holders:
        from netmem_probe.kernel.summary import pool_holders

        summary = pool_holders(target.prog, target.problems, info)
        rec["holders"] = summary.record() if summary is not None else None
    # The kernel log's messages about this pool (stalled shutdown); null
    # when the log cannot be read.
    rec["kernel-log"] = (
        None
        if log.error is not None
        else [message_record(m) for m in log.of_pool(info.id)]
        if info.id is not None
        else []
    )
    if ynl:
        # netlink answers ENOENT for a pool it does not show, EOPNOTSUPP
        # without CONFIG_PAGE_POOL_STATS: ynl prints no object.
        if info.state not in NETLINK_STATES:
            raise click.ClickException(
                f"netlink does not show pool {info.id} ({info.state}): "
                "page-pool-stats-get has no object for it"
            )
        if rec["stats"] is None:
            raise click.ClickException(
                "this kernel has no CONFIG_PAGE_POOL_STATS: page-pool-stats-get is not supported"
            )
        _print_ynl(ynl_stats(rec, rec["stats"]))
    elif as_json:
        emit_json(rec)
    else:
        _print_pool(rec)
    return target.finish(findings=info.detached and info.inflight > 0)


def _print_pool(rec: Dict[str, Any]) -> None:
    """The pool as indented ``key value`` lines, every value in one column."""
    lines: List[Tuple[str, Optional[str]]] = []  # (indented key, value); None: a heading

    def add(indent: str, key: str, value: Any) -> None:
        lines.append((indent + key, "-" if value is None else str(value)))

    for key, value in rec.items():
        if key not in ("id", "address", "breakdown", "stats", "holders", "kernel-log"):
            add("  ", key, value)
    lines.append(("  in flight, as the pool sees it:", None))
    for key, value in rec["breakdown"].items():
        add("    ", key, value)
    if "holders" in rec:
        lines.append(("  who holds them:", None))
        holders = rec["holders"]
        if holders is None:
            lines.append(("    n/a (a memory provider's pool: see providers)", None))
        else:
            for kind, n in holders["holder-kinds"].items():
                add("    ", kind, n)
            for release in holders["release"]:
                lines.append((f"    to release {release['pages']}: {release['action']}", None))
    if not rec["kernel-log"]:
        # "-": the log could not be read; "none": nothing in it names the pool.
        add("  ", "kernel log", None if rec["kernel-log"] is None else "none")
    else:
        lines.append(("  kernel log:", None))
    for m in rec["kernel-log"] or ():
        lines.append((f"    [{m['timestamp'] / 1e9:12.6f}] {m['text']}", None))
    if rec["stats"] is None:
        lines.append(("  stats: n/a (CONFIG_PAGE_POOL_STATS off)", None))
    else:
        lines.append(("  stats:", None))
        for key in STAT_NAMES:
            add("    ", key, rec["stats"][key])
    width = max(len(key) for key, value in lines if value is not None)
    click.echo(
        f"page pool {rec['id']} at {rec['address']}"
        if rec["id"] is not None
        else f"page pool at {rec['address']} (this kernel gives pools no id)"
    )
    for key, value in lines:
        click.echo(key if value is None else f"{key:<{width}}  {value}")
