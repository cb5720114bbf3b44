"""``netmem-probe leaks``: is a stalled pool's memory parked, cached, or leaked?"""

from typing import Any, Dict, Optional, Sequence

import click

from netmem_probe.commands.holders import ADDRESS_KEY, holder_record, jobs_option, owner_record
from netmem_probe.commands.pages import POOL_KEY
from netmem_probe.context import Target
from netmem_probe.kernel.holders import Holder
from netmem_probe.kernel.leaks import LeakReport, NetmemVerdict, PoolLeaks, find_leaks
from netmem_probe.kernel.search import SearchOptions
from netmem_probe.kernel.summary import holder_kind, release_of, summarize
from netmem_probe.report import emit_json_line, hexaddr, human_seconds
from netmem_probe.report.progress import Progress
from netmem_probe.report.table import Column, Table, show_hex, table_options
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.pages import leaks_code

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed leaks
      every detached pool's in-flight pages, each parked, cached or leaked
  netmem-probe -c vmcore -s vmlinux leaks --pool 19
      the pool of "page_pool_release_retry() stalled pool shutdown: id 19"
  sudo netmem-probe leaks --json | jq 'select(.verdict == "leaked")'
      only what nothing holds, with the evidence, as JSON Lines
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed leaks --pool 10 --drgn
      how it is done, as a drgn script: memmap scan, memory search, verdicts
"""

VERDICTS = ("parked", "cached", "leaked")


def verdict_record(v: NetmemVerdict) -> Dict[str, Any]:
    t = v.target
    return {
        "pool-id": v.pool_id,
        "netmem": hexaddr(t.netmem),
        "kind": t.kind,
        ADDRESS_KEY[t.kind]: hexaddr(t.address),
        "pfn": v.pfn,
        "pp-ref-count": v.pp_ref_count,
        "refcount": v.refcount,
        "user-refs": v.user_refs,
        "verdict": v.verdict,
        "holder-kind": holder_kind(v.evidence + v.references, v.user_refs),
        "release": release_of(v.evidence + v.references, v.user_refs, v.owners),
        "evidence": [holder_record(h) for h in v.evidence],
        "references": [holder_record(h) for h in v.references],
        "owners": [owner_record(o) for o in v.owners] if v.owners is not None else None,
    }


COLUMNS = [
    Column("netmem"),
    Column("kind"),
    Column("pfn", number=True, show=show_hex),
    Column("verdict", color=lambda r: "red" if r["verdict"] == "leaked" else None),
    # Sorted as shown: by the evidence in a few words.
    Column("evidence", get=lambda r: r["why"], free_text=True),
    Column("pool-id", number=True),
    Column("pp-ref-count", number=True, largest_first=True),
    Column("refcount", number=True, largest_first=True),
    Column("user-refs", number=True, largest_first=True),
    Column("holder-kind"),
    Column("release", free_text=True),
]


def _why(v: NetmemVerdict) -> str:
    """The evidence in a few words."""
    if v.verdict == "leaked":
        others = ", ".join(sorted({h.kind for h in v.references}))
        return (
            f"nothing holds it (other references: {others})"
            if others
            else ("no reference anywhere in kernel memory")
        )
    if not v.evidence:
        held = "".join(f"; fd {o.fd} of pid {o.pid} ({o.comm})" for o in v.owners or ())
        return f"io_uring user space holds it (user_refs {v.user_refs}{held})"
    return "; ".join(_holder_text(h) for h in v.evidence)


def _row(v: NetmemVerdict) -> Dict[str, Any]:
    """A verdict's record with the evidence as the table shows it."""
    return {**verdict_record(v), "why": _why(v)}


def _holder_text(h: Holder) -> str:
    if h.kind in ("skb-frag", "skb-head"):
        what = (
            f"frag {h.frag} of skb {h.skb:#x}"
            if h.kind == "skb-frag"
            else (f"head of skb {h.skb:#x}")
        )
        if h.rx_slot is not None:
            return f"{what} in {h.rx_slot}"
        if h.sock is None:
            return f"{what} (on no socket queue found)"
        peer = f" from {h.sock.remote}" if h.sock.remote else ""
        queue = f"{h.queue} queue" if h.queue else "a queue"
        return f"{what} on the {queue} of {h.sock.family} socket {h.sock.local}{peer}"
    if h.kind == "devmem-token":
        where = f"socket {h.sock.local}" if h.sock is not None else "a socket"
        if h.sock is not None and h.sock.remote:
            where += f" from {h.sock.remote}"
        if h.sock is not None and h.sock.state:
            where += f" ({h.sock.state})"
        held = "".join(f"; fd {o.fd} of pid {o.pid} ({o.comm})" for o in h.owners or ())
        return f"devmem token {h.token} of {h.sock.protocol if h.sock else 'tcp'} {where}{held}"
    if h.rx_slot is not None:
        return str(h.rx_slot)
    if h.static is not None:
        return f"{h.static.owner}'s static data: {h.static}"
    if h.pool_id is None:  # a kernel without pool ids (before v6.8)
        return f"{h.kind} at {h.address:#x}"
    return f"{h.kind} of pool {h.pool_id} at {h.address:#x}"


def _pool_line(p: PoolLeaks) -> str:
    info = p.info
    state = info.state + ",detached"
    if info.detach_age is not None:
        state += f" {human_seconds(info.detach_age)} ago"
    counts = ", ".join(f"{p.count(v)} {v}" for v in VERDICTS)
    missing = f", {p.missing} missing from the memmap" if p.missing else ""
    return f"pool {info.label} ({state}): {info.inflight} in flight: {counts}{missing}"


@click.command(epilog=EXAMPLES)
@click.option(
    "--pool",
    "pool_ids",
    type=POOL_KEY,
    multiple=True,
    metavar="ID",
    help="only this detached pool (repeatable)",
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one page or net_iov per line")
@table_options(COLUMNS, [c.name for c in COLUMNS[:5]])
@click.option(
    "--search-all",
    is_flag=True,
    help="search all of RAM for every page, even those an skb or the pool is found "
    "holding without it (to list every reference)",
)
@jobs_option
@drgn_option(leaks_code)
@click.pass_obj
def leaks(
    target: Target,
    pool_ids: Sequence[int],
    as_json: bool,
    table: Table,
    search_all: bool,
    jobs: Optional[int],
) -> int:
    """Detached pools' in-flight pages and net_iovs: parked, cached or leaked.

    A detached pool (its driver destroyed it) waits for every page it handed
    out. Each is found in the memmap, then looked for in the skbs of the
    skb slab caches and the pool's own cache and ring, and, if none holds
    it (or with --search-all), in all of RAM:
    parked = an skb holds it (on a socket queue: legitimately in use, maybe
    forever) or user space holds the net_iov (io_uring zcrx, or a devmem
    TCP receiver's token); cached = the pool's
    own alloc cache or ring holds it and its release work will free it;
    leaked = nothing holding it was found (other references are listed).
    Exit code 1 when anything is leaked or missing from the memmap.
    """
    progress = Progress("scanning the memmap", "struct pages")
    search_progress = Progress("searching RAM", "bytes")
    try:
        report = find_leaks(
            target.prog,
            target.problems,
            pool_ids,
            progress,
            SearchOptions(jobs=jobs, progress=search_progress),
            search_all,
        )
    finally:
        progress.close()
        search_progress.close()
    missing = [str(i) for i in pool_ids if i not in report.pool_ids]
    if missing:
        raise target.not_found(f"no page pool with id {', '.join(missing)}", param_hint="--pool")
    stalled = {key for p in report.pools for key in (p.info.id, p.info.address)}
    for pool_id in dict.fromkeys(pool_ids):
        if pool_id not in stalled:
            click.echo(
                f"netmem-probe: note: pool {pool_id} is not a detached pool with pages in flight",
                err=True,
            )
    if as_json:
        for p in report.pools:
            for v in table.sorted_by(p.verdicts, _row):
                emit_json_line(verdict_record(v))
    else:
        _print(report, pool_ids, table)
    return target.finish(findings=report.leaked > 0)


def _print(report: LeakReport, pool_ids: Sequence[int], table: Table) -> None:
    if not report.pools:
        if pool_ids:
            ids = [str(i) for i in dict.fromkeys(pool_ids)]
            among = f"pool {ids[0]}" if len(ids) == 1 else f"pools {', '.join(ids)}"
            click.echo(f"no detached page pool with pages in flight among {among}")
        else:
            click.echo("no detached page pool has pages in flight")
        return
    for i, p in enumerate(report.pools):
        if i:
            click.echo()
        click.echo(_pool_line(p))
        if p.verdicts:
            table.print([_row(v) for v in p.verdicts])
            if not table.header:
                continue
            summary = summarize(
                (v.evidence + v.references, v.user_refs, v.owners) for v in p.verdicts
            )
            for line in summary.lines():
                click.echo(line)
