"""``netmem-probe pages``: the page-pool pages in the memmap, streamed as found."""

import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import click

from netmem_probe.context import Target
from netmem_probe.kernel.page_pool import PagePoolInfo
from netmem_probe.kernel.pages import PpPage, PpPageScanner
from netmem_probe.report import emit_json, emit_json_line, hexaddr, human_duration, quantity
from netmem_probe.report.progress import Progress
from netmem_probe.report.table import Column, Table, show_hex, table_options
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.pages import pages_code

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed pages
      the pages detached pools still wait for, one row each
  netmem-probe -c vmcore -s vmlinux pages --pool 19 --json > pool19.jsonl
      every page of pool 19 (as in "stalled pool shutdown: id 19"), as JSON Lines
  sudo netmem-probe pages --all-pools --count
      pages found per pool against each pool's in-flight count
"""

WHERE = ("cache", "ring", "out")
PAGE_COLUMNS = [
    Column("pfn", number=True, show=show_hex, width=10),
    Column("page", width=18),
    Column("pool-id", number=True, width=7),
    Column("pp-ref-count", number=True, largest_first=True, width=7),
    Column("refcount", number=True, largest_first=True, width=8),
    Column("dma-index", number=True, width=9),
    Column("where", width=5),
    Column("pool", width=18),
]


def _signed(value: int) -> str:
    return f"{value:+d}" if value else "0"


# pages --count
COUNT_COLUMNS = [
    Column("id", number=True),
    Column(
        "state",
        cell=lambda r: r["state"] + (",detached" if r["detached"] else ""),
        color=lambda r: "yellow" if r["detached"] else None,
    ),
    Column("inflight", number=True, largest_first=True),
    Column("found", number=True, largest_first=True),
    Column("alloc-cache", number=True, largest_first=True),
    Column("ring", number=True, largest_first=True),
    Column("out", number=True, largest_first=True),
    Column("difference", number=True, largest_first=True, show=_signed),
]


def page_record(page: PpPage) -> Dict[str, Any]:
    """A page as JSON: struct page address (its netmem_ref), pool, counts, place."""
    return {
        "pfn": page.pfn,
        "page": hexaddr(page.page),
        "pool-id": page.pool_id,
        "pool": hexaddr(page.pool),
        "pp-ref-count": page.pp_ref_count,
        "refcount": page.refcount,
        "dma-index": page.dma_index,
        "where": page.where,
    }


class PoolKey(click.ParamType):
    """A pool id, or a pool's address (0x...): kernels before v6.8 give pools no id."""

    name = "pool"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return int(value, 0)
        except ValueError:
            self.fail(f"{value!r} is neither a pool id nor an address", param, ctx)


POOL_KEY = PoolKey()


def select_pools(
    target: Target, scanner: PpPageScanner, ids: Sequence[int], all_pools: bool
) -> List[PagePoolInfo]:
    """The pools a command looks at: ``ids``, all, or detached ones with pages out."""
    pools = sorted(scanner.pools.values(), key=lambda info: info.sort_key)
    if ids:
        by_key = {key: info for info in pools for key in (info.id, info.address)}
        missing = [str(i) for i in ids if i not in by_key]
        if missing:
            raise target.not_found(
                f"no page pool with id {', '.join(missing)}", param_hint="--pool"
            )
        return list({by_key[i].address: by_key[i] for i in ids}.values())
    if all_pools:
        return pools
    return [info for info in pools if info.detached and info.inflight]


def count_record(info: PagePoolInfo, counts: Optional[Dict[str, int]]) -> Dict[str, Any]:
    """A pool's pages found by place, against its in-flight count."""
    found = None if counts is None else sum(counts.values())
    return {
        "id": info.id,
        "address": hexaddr(info.address),
        "state": info.state,
        "detached": info.detached,
        "inflight": info.inflight,
        "found": found,
        "alloc-cache": None if counts is None else counts["cache"],
        "ring": None if counts is None else counts["ring"],
        "out": None if counts is None else counts["out"],
        "difference": None if found is None else found - info.inflight,
    }


@click.command(epilog=EXAMPLES)
@click.option(
    "--pool",
    "pool_ids",
    type=POOL_KEY,
    multiple=True,
    metavar="ID",
    help="only pages of this pool (repeatable)",
)
@click.option("--all-pools", is_flag=True, help="pages of every pool")
@click.option(
    "--count", is_flag=True, help="per-pool totals against each pool's in-flight count, not pages"
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON Lines, one page per line (with --count: a JSON array)",
)
@table_options(PAGE_COLUMNS + COUNT_COLUMNS, [c.name for c in PAGE_COLUMNS[:7]])
@drgn_option(pages_code)
@click.pass_obj
def pages(
    target: Target,
    pool_ids: Sequence[int],
    all_pools: bool,
    count: bool,
    as_json: bool,
    table: Table,
) -> int:
    """Page-pool pages, found by scanning the whole memmap once.

    By default the pages of detached pools that still have pages in flight
    (the pages a "stalled pool shutdown" waits for); --pool and --all-pools
    choose others. Each row: pfn, struct page address (its netmem_ref), pool
    id, pp_ref_count, _refcount, DMA index, and where the pool sees it:
    alloc cache, ring, or out. Pools of memory providers hand out net_iovs,
    which are not in the memmap (see holders). Exit code 1 when --count finds
    a pool whose pages differ from its in-flight count.
    """
    if pool_ids and all_pools:
        raise click.UsageError("--pool and --all-pools are mutually exclusive")
    scanner = PpPageScanner(target.prog, target.problems)
    pools = select_pools(target, scanner, pool_ids, all_pools)
    if not pools:
        click.echo(
            "netmem-probe: note: no detached page pool has pages in flight "
            "(--all-pools scans for every pool's pages)",
            err=True,
        )
        if count and as_json:
            emit_json([])
        return target.finish(findings=False)
    progress = Progress("scanning the memmap", "struct pages")
    started = time.monotonic()
    tally: Dict[int, Dict[str, int]] = {info.address: dict.fromkeys(WHERE, 0) for info in pools}

    def found() -> Iterator[Dict[str, Any]]:
        for page in scanner.pages(pools, progress):
            tally[page.pool][page.where] += 1
            yield page_record(page)

    try:
        if count:
            for _ in found():
                pass
        elif as_json:
            records = found()
            for rec in table.sorted(records) if table.sort else records:
                emit_json_line(rec)
        else:
            for _ in table.stream(found()):
                pass
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    if count:
        return _report_counts(target, pools, tally, as_json, table.defaults(COUNT_COLUMNS))
    if not as_json and table.header:
        total = sum(sum(t.values()) for t in tally.values())
        click.echo(
            f"{quantity(total, 'page-pool page')} of {quantity(len(pools), 'pool')}; "
            f"{quantity(scanner.total_pfns, 'struct page')} scanned "
            f"in {human_duration(elapsed)} [{target.describe()}]"
        )
    return target.finish(findings=False)


def _report_counts(
    target: Target,
    pools: List[PagePoolInfo],
    tally: Dict[int, Dict[str, int]],
    as_json: bool,
    table: Table,
) -> int:
    records = []
    for info in pools:
        # A memory provider's pool hands out net_iovs: the memmap has none.
        records.append(count_record(info, None if info.provider else tally[info.address]))
    records = table.sorted(records)
    if as_json:
        emit_json(records)
    else:
        table.print(records)
    differ = [r for r in records if r["difference"]]
    for r in differ:
        click.echo(
            f"netmem-probe: note: pool {r['id']}: {r['found']} pages found, "
            f"{r['inflight']} in flight (hold - release)",
            err=True,
        )
    for info in pools:
        if info.provider:
            click.echo(
                f"netmem-probe: note: pool {info.label} is filled by a memory provider "
                f"({info.provider}): its in-flight net_iovs are not in the memmap",
                err=True,
            )
    return target.finish(findings=bool(differ))
