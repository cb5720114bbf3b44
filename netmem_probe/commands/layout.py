"""``netmem-probe layout``: the kernel's netmem layout asserts, checked on the target's types."""

from typing import Any, Dict

import click

from netmem_probe.context import EXIT_FINDINGS, EXIT_OK, Target
from netmem_probe.kernel.layout import LayoutResult, MemberLayout, check_layout
from netmem_probe.report import emit_json, emit_table
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


def _row(result: LayoutResult) -> Dict[str, Any]:
    return {
        "assert": result.agreement.macro,
        "left": str(result.left),
        "left-offset": result.left.offset,
        "left-size": result.left.size,
        "right": str(result.right),
        "right-offset": result.right.offset,
        "right-size": result.right.size,
        "result": "ok" if result.ok else "MISMATCH: " + (result.reason or ""),
    }


@click.command(epilog=EXAMPLES)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@drgn_option(layout_code)
@click.pass_obj
def layout(target: Target, as_json: bool) -> int:
    """Check that struct page, struct netmem_desc and struct net_iov agree.

    Evaluates every NETMEM_DESC_ASSERT_OFFSET / NET_IOV_ASSERT_OFFSET pair of
    include/net/netmem.h that applies to the target's kernel, plus
    sizeof(struct netmem_desc) <= offsetof(struct page, _refcount), comparing
    member sizes as well as offsets. Exit code 1 on any disagreement.
    """
    results = check_layout(target.types_program())
    if as_json:
        emit_json(
            [
                {
                    "assert": r.agreement.macro,
                    "left": _member(r.left),
                    "right": _member(r.right),
                    "ok": r.ok,
                    "reason": r.reason,
                }
                for r in results
            ]
        )
    elif results:
        emit_table(
            [_row(r) for r in results],
            [
                "assert",
                "left",
                "left-offset",
                "left-size",
                "right",
                "right-offset",
                "right-size",
                "result",
            ],
            headers=[
                "ASSERT",
                "MEMBER",
                "OFFSET",
                "SIZE",
                "MUST EQUAL",
                "OFFSET",
                "SIZE",
                "RESULT",
            ],
        )
    else:
        click.echo(
            "no netmem layout asserts apply to this kernel (no struct net_iov or "
            "struct netmem_desc)"
        )
    bad = [r for r in results if not r.ok]
    for r in bad:
        click.echo(f"netmem-probe: layout mismatch: {r.reason}", err=True)
    return EXIT_FINDINGS if bad else EXIT_OK
