"""``netmem-probe decode``: what a netmem_ref value points at."""

from typing import Any, Dict, Sequence, Union

import click

from netmem_probe.context import Target, netmem_arguments
from netmem_probe.kernel.decode import NetIovInfo, decode_netmem
from netmem_probe.kernel.netmem import PageInfo
from netmem_probe.report import emit_json, hexaddr
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.netmem import decode_code

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -c vmcore -s vmlinux decode 0xffffea0004a2b1c0
      a page netmem: pfn, page-pool owner, refcounts
  netmem-probe -f fixtures/vmcore-stubs/linux-7.3-mixed decode 0xffff888004222801
      a net_iov netmem (bit 0 set): area, index, provider, user refs
  grep -o 'netmem=0x[0-9a-f]*' trace.txt | cut -d= -f2 | netmem-probe decode -
      decode values read from standard input
"""


def _record(info: Union[PageInfo, NetIovInfo]) -> Dict[str, Any]:
    if isinstance(info, PageInfo):
        return {
            "netmem": hexaddr(info.netmem),
            "kind": "page",
            "page": hexaddr(info.page),
            "pfn": info.pfn,
            "phys": hexaddr(info.phys),
            "pp": info.is_pp if info.refcount is not None else None,
            "scheme": info.scheme,
            "pool": hexaddr(info.pool),
            "pool-id": info.pool_id,
            "dma-addr": hexaddr(info.dma_addr),
            "dma-index": info.dma_index,
            "pp-ref-count": info.pp_ref_count,
            "refcount": info.refcount,
            "error": info.problem,
        }
    return {
        "netmem": hexaddr(info.netmem),
        "kind": "net_iov",
        "net-iov": hexaddr(info.niov),
        "owner": hexaddr(info.owner),
        "index": info.index,
        "num-niovs": info.num_niovs,
        "type": info.type,
        "pool": hexaddr(info.pool),
        "pool-id": info.pool_id,
        "dma-addr": hexaddr(info.dma_addr),
        "pp-ref-count": info.pp_ref_count,
        "user-refs": info.user_refs,
        "area-id": info.area_id,
        "dmabuf": info.binding_id,
        "error": info.problem,
    }


def _print_block(record: Dict[str, Any]) -> None:
    what = "struct page" if record["kind"] == "page" else "struct net_iov"
    click.echo(f"netmem {record['netmem']}: {what}")
    for key, value in record.items():
        if key in ("netmem", "kind") or value is None:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif key == "pfn":
            value = hex(value)  # as every table shows a pfn
        click.echo(f"  {key:<13} {value}")


@click.command(epilog=EXAMPLES)
@click.argument("netmem", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@drgn_option(decode_code)
@click.pass_obj
def decode(target: Target, netmem: Sequence[str], as_json: bool) -> int:
    """Decode netmem_ref values (hex or decimal; - reads them from stdin).

    Bit 0 (NET_IOV) set: a struct net_iov (owner area, index, provider, pool,
    DMA address, refcounts). Clear: a struct page (pfn, physical address,
    page-pool ownership by this kernel's scheme, refcounts). Exit code 1 when
    a value points at nothing valid, with the reason.
    """
    values = netmem_arguments(netmem, target)
    records = [_record(decode_netmem(target.prog, value, target.problems)) for value in values]
    if as_json:
        emit_json(records)
    else:
        for i, record in enumerate(records):
            if i:
                click.echo()
            _print_block(record)
    return target.finish(findings=any(r["error"] for r in records))
