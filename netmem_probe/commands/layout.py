"""``netmem-probe layout``: the kernel's netmem layout asserts, checked on the target's types."""

from typing import Any, Callable, Dict

import click

from netmem_probe.context import EXIT_FINDINGS, EXIT_OK, Target
from netmem_probe.kernel.layout import (
    LayoutResult,
    MemberLayout,
    absent_netmem_asserts,
    check_layout,
)
from netmem_probe.report import emit_json
from netmem_probe.report.table import Column, Table, table_options
from netmem_probe.snippets import drgn_option
from netmem_probe.snippets.netmem import layout_code

EXAMPLES = """\b
EXAMPLES:
  netmem-probe -s /usr/lib/debug/boot/vmlinux-$(uname -r) layout
      check a kernel's debug info, no core and no root needed
  netmem-probe -c vmcore -s vmlinux layout --json
      the same for the kernel of a crash dump, as JSON
  netmem-probe -f fixtures/vmcore-stubs/broken-netmem-desc layout
      a fixture whose struct netmem_desc breaks an agreement: exit code 1
"""


def _member(layout: MemberLayout) -> Dict[str, Any]:
    return {
        "type": layout.type,
        "member": layout.member,
        "offset": layout.offset,
        "size": layout.size,
    }


def _record(result: LayoutResult) -> Dict[str, Any]:
    return {
        "assert": result.agreement.macro,
        "left": _member(result.left),
        "right": _member(result.right),
        "ok": result.ok,
        "reason": result.reason,
    }


def _side(side: str, key: str) -> Callable[[Dict[str, Any]], Any]:
    return lambda rec: rec[side][key]


def _member_key(side: str) -> Callable[[Dict[str, Any]], Any]:
    """What --sort left/right orders by: the type, then the member."""
    return lambda rec: (rec[side]["type"], rec[side]["member"])


def _row(result: LayoutResult) -> Dict[str, Any]:
    """A result's record, with the members as the table names them."""
    return {**_record(result), "left-text": str(result.left), "right-text": str(result.right)}


COLUMNS = [
    Column("assert"),
    Column("left", header="MEMBER", get=_member_key("left"), cell=lambda rec: rec["left-text"]),
    Column("left-offset", header="OFFSET", get=_side("left", "offset"), number=True),
    Column("left-size", header="SIZE", get=_side("left", "size"), number=True),
    Column(
        "right", header="MUST-EQUAL", get=_member_key("right"), cell=lambda rec: rec["right-text"]
    ),
    Column("right-offset", header="OFFSET", get=_side("right", "offset"), number=True),
    Column("right-size", header="SIZE", get=_side("right", "size"), number=True),
    Column(
        "ok",
        header="RESULT",
        cell=lambda rec: "ok" if rec["ok"] else f"MISMATCH: {rec['reason'] or ''}",
        color=lambda rec: None if rec["ok"] else "red",
        free_text=True,
    ),
]


@click.command(epilog=EXAMPLES)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@table_options(COLUMNS, [c.name for c in COLUMNS])
@drgn_option(layout_code, needs_pools=False)
@click.pass_obj
def layout(target: Target, as_json: bool, table: Table) -> int:
    """Check that struct page, struct netmem_desc and struct net_iov agree.

    Evaluates every NETMEM_DESC_ASSERT_OFFSET / NET_IOV_ASSERT_OFFSET pair of
    include/net/netmem.h that applies to the target's kernel, plus
    sizeof(struct netmem_desc) <= offsetof(struct page, _refcount), comparing
    member sizes as well as offsets. Exit code 1 on any disagreement.
    """
    prog = target.types_program()
    results = check_layout(prog)
    absent = absent_netmem_asserts(prog)
    if absent:
        click.echo(
            "netmem-probe: note: not in this kernel yet: " + ", ".join(absent),
            err=True,
        )
    rows = table.sorted([_row(r) for r in results])
    if as_json:
        emit_json([_record(r) for r in table.sorted_by(results, _row)])
    elif results:
        table.print(rows)
    else:
        click.echo(
            "no netmem layout asserts apply to this kernel (no struct net_iov or "
            "struct netmem_desc)"
        )
    bad = [r for r in results if not r.ok]
    for r in bad:
        click.echo(f"netmem-probe: layout mismatch: {r.reason}", err=True)
    return EXIT_FINDINGS if bad else EXIT_OK
