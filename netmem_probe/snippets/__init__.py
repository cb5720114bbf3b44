"""
``--drgn``: plain drgn code that computes what a command shows.

Like the ``--drgn`` option of drgn's crash command emulation, every
netmem-probe command can print, instead of its report, a Python script that
computes the same rows with drgn and drgn's own helpers only (no netmem-probe
import), so that users can read how it is done and adapt it.  It runs as
``drgn -c vmcore -s vmlinux script.py`` (or live, ``drgn script.py``), or
inside a drgn session, where ``prog`` is defined.

The code is generated for the target's types: a kernel whose
``detach_time`` is a ``ktime_t``, whose ``net_iov`` keeps its page-pool
members in ``desc``, or whose page-pool pages carry a DMA index in
``pp_magic`` gets the code for that kernel, with a comment saying why.  The
command's own arguments and filters are part of the code.

Output: a script prints one JSON object per row (JSON Lines).  Its keys are
those of :data:`KEYS` for the command, a subset of the command's ``--json``
keys, with the same values; the tests run every script on the bundled
fixtures and compare.
"""

import functools
import json
import textwrap
from string import Template
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple, TypeVar

import click
from drgn import Program
from drgn.commands import DrgnCodeBuilder

from netmem_probe.kernel.structs import member_exists
from netmem_probe.netlink import PAGE_POOL_GET_KEYS
from netmem_probe.report.table import Table

__all__ = (
    "COUNT_KEYS",
    "HOLDER_KEYS",
    "LEFT_OUT",
    "KEYS",
    "Snippet",
    "drgn_option",
    "no_drgn_option",
    "fill",
    "has_member",
    "has_object",
    "has_type",
    "py_strings",
    "sort_option",
    "define_sort_key",
)

F = TypeVar("F", bound=Callable[..., Any])
CodeGenerator = Callable[..., str]

_POOL_KEYS = (
    *PAGE_POOL_GET_KEYS,
    "address",
    "state",
    "detached",
    "detach-age",
    "netdev",
    "orig-netdev",
    "queue",
    "order",
    "pool-size",
    "nid",
    "cpuid",
    "flags",
    "dma-map",
    "hold",
    "release",
    "destroy-cnt",
)

#: command -> the keys of the records a script prints, one per line: the
#: records of the command's ``--json`` (the elements of its array, its one
#: object, or its JSON Lines), with the same values, in the same order.  A key
#: of ``--json`` that is not here, the script leaves out (:data:`LEFT_OUT`).
#: ``pool`` records also have ``breakdown`` and ``stats``; ``pages --count``
#: records have :data:`COUNT_KEYS`; the references in a ``holders`` record's
#: ``holders`` list have :data:`HOLDER_KEYS`; a ``decode`` record for a value
#: that names nothing valid has ``error``, a reason worded more briefly.
KEYS: Dict[str, Tuple[str, ...]] = {
    "pools": _POOL_KEYS,
    "pool": (*_POOL_KEYS, "breakdown", "stats"),
    "decode": (
        "netmem",
        "kind",
        "page",
        "pfn",
        "phys",
        "pp",
        "scheme",
        "pool",
        "pool-id",
        "dma-addr",
        "dma-index",
        "pp-ref-count",
        "refcount",
        "net-iov",
        "owner",
        "index",
        "num-niovs",
        "type",
        "user-refs",
        "area-id",
        "dmabuf",
        "error",
    ),
    "layout": ("assert", "left", "right", "ok"),
    "pages": ("pfn", "page", "pool-id", "pool", "pp-ref-count", "refcount", "dma-index", "where"),
    "holders": ("netmem", "kind", "page", "net-iov", "pool-id", "holders"),
    "leaks": (
        "pool-id",
        "netmem",
        "kind",
        "page",
        "net-iov",
        "pfn",
        "pp-ref-count",
        "user-refs",
        "verdict",
    ),
    "providers": (
        "kind",
        "id",
        "area",
        "address",
        "netdev",
        "queues",
        "pools",
        "niovs",
        "free",
        "in-pool",
        "stack",
        "user",
    ),
    "niovs": (
        "area",
        "kind",
        "chunk",
        "index",
        "net-iov",
        "netmem",
        "state",
        "pool-id",
        "pp-ref-count",
        "user-refs",
        "dma-addr",
        "offset",
    ),
}
#: command -> the keys of its ``--json`` records its script leaves out: what
#: the script would need much more code for (a netdev's driver and namespace,
#: a socket's addresses, the evidence of a verdict) or that only restates
#: others.
LEFT_OUT: Dict[str, Tuple[str, ...]] = {
    "pools": ("driver", "netns", "found-by", "release-pending"),
    "pool": ("driver", "netns", "holders", "kernel-log", "found-by", "release-pending"),
    "layout": ("reason",),
    "pages --count": ("state", "detached", "address"),
    "holders": ("pool-netdev",),
    "holders references": (
        "family",
        "local",
        "remote",
        "netns",
        "netdev",
        "detail",
        "slab-cache",
        "slab-object",
        "pointed-from",
        "module",
        "symbol",
        "protocol",
        "state",
        "owners",
        "release",
        "token",
    ),
    "leaks": ("refcount", "evidence", "references", "holder-kind", "release", "owners"),
    "providers": (
        "ifq",
        "ifindex",
        "refcount",
        "direction",
        "niov-size",
        "size",
        "chunks",
        "bytes",
        "inconsistent",
        "owners",
    ),
}

#: The keys of each reference in a ``holders`` (and ``leaks``) record's list.
HOLDER_KEYS = (
    "kind",
    "address",
    "value",
    "skb",
    "frag",
    "sock",
    "queue",
    "pool-id",
    "driver",
    "rx-queue",
    "slot",
)
COUNT_KEYS = ("id", "inflight", "found", "alloc-cache", "ring", "out", "difference")


class Snippet(DrgnCodeBuilder):
    """
    drgn's code builder (imports gathered and sorted at the top), plus named
    definitions that are emitted once however many parts of a script need
    them, and ``$NAME`` templates for code that varies with the kernel.
    """

    def __init__(self, prog: Program, command_line: str, what: str) -> None:
        super().__init__(prog)
        self.add_import("json")
        self._defined: Set[str] = set()
        about = textwrap.fill(
            f"{command_line}, as plain drgn code for this kernel: {what}. "
            "Prints one JSON object per row.",
            76,
        )
        self._header = (
            textwrap.indent(about, "# ") + "\n#\n"
            "# Run it with: drgn -c vmcore -s vmlinux THIS.py (or drgn THIS.py on the\n"
            "# running kernel), or paste it into drgn, where prog is defined.\n\n"
        )

    @property
    def prog(self) -> Program:
        return self._prog

    def get(self) -> str:
        """The script: the header comment, the imports, then the code."""
        return self._header + super().get()

    def define(
        self, name: str, code: str, imports: Iterable[Tuple[str, str]] = (), **substitutions: str
    ) -> None:
        """
        Append ``code`` (dedented, ``$NAME`` placeholders substituted) unless
        a definition called ``name`` was appended already; ``imports`` are
        ``(module, name)`` pairs the code needs.
        """
        if name in self._defined:
            return
        self._defined.add(name)
        for module, symbol in imports:
            self.add_from_import(module, symbol)
        self._append_part(fill(code, **substitutions))

    def main(self, code: str, **substitutions: str) -> None:
        """Append the script's top-level code."""
        self._append_part(fill(code, **substitutions))

    def _append_part(self, code: str) -> None:
        # Two blank lines between top-level parts, as PEP 8 has them.
        self.append("\n\n" + code if self._code else code)


def has_type(prog: Program, name: str) -> bool:
    """Whether the target's debug info has type ``name``."""
    try:
        prog.type(name)
        return True
    except LookupError:
        return False


def has_member(prog: Program, type_name: str, path: str) -> bool:
    """Whether the target's ``type_name`` exists and has member ``path``."""
    return has_type(prog, type_name) and member_exists(prog.type(type_name), path)


def has_object(prog: Program, name: str) -> bool:
    """Whether the target has a variable, function or constant ``name``."""
    try:
        prog.object(name)
        return True
    except (LookupError, ValueError):
        return False


def py_strings(values: Iterable[str]) -> str:
    """A tuple of strings as Python source, in double quotes."""
    items = [json.dumps(v) for v in values]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def fill(code: str, **substitutions: str) -> str:
    """
    ``code`` dedented, with each ``$NAME`` replaced by ``substitutions[NAME]``.
    A placeholder alone on its line stands for a block: the substitution is
    dedented and indented like the placeholder (an empty one drops the line).
    """
    lines: List[str] = []
    for line in textwrap.dedent(code).strip("\n").splitlines():
        stripped = line.strip()
        name = stripped[1:]
        if stripped.startswith("$") and name in substitutions:
            block = textwrap.dedent(substitutions[name]).strip("\n")
            if not block:
                continue
            margin = line[: len(line) - len(line.lstrip())]
            lines.extend(margin + x if x else x for x in block.splitlines())
            continue
        lines.append(line)
    return Template("\n".join(lines) + "\n").substitute(substitutions)


def sort_option(table: Optional[Table], natural: Optional[str] = None) -> str:
    """`` --sort KEY`` for a script's header, unless the records come in ``natural`` order."""
    if table is None or table.sort is None or table.sort.name == natural:
        return ""
    return f" --sort {table.sort.name}"


def define_sort_key(
    s: Snippet,
    table: Optional[Table],
    keys: Iterable[str],
    derived: Optional[Mapping[str, str]] = None,
    natural: Optional[str] = None,
) -> bool:
    """
    Define ``sort_key(row)``, the order of ``--sort`` (netmem_probe.report.table
    sorts the same way), and say whether the script must sort: not without
    ``--sort`` or when the records come in ``natural`` order already.  The
    column is one of ``keys`` the script prints, or a ``derived`` one
    (name -> a Python expression over ``row``); any other column is a usage
    error, since the script does not have its values.
    """
    column = table.sort if table is not None else None
    if column is None or column.name == natural:
        return False
    keys = list(keys)
    derived = dict(derived or {})
    if column.name in derived:
        value = derived[column.name]
    elif column.name in keys and column.get is None:
        value = f"row.get({json.dumps(column.name)})"
    else:
        sortable = sorted(set(keys) | set(derived))
        raise click.UsageError(
            f"--drgn: the script does not print {column.name}, so it cannot sort by it "
            f"(--sort with --drgn takes one of: {', '.join(sortable)})"
        )
    order = "largest" if column.largest_first else "smallest"
    negate = (
        "if isinstance(value, (int, float)):\n    value = -value  # largest first"
        if column.largest_first
        else ""
    )
    s.define(
        "sort_key",
        '''
        def sort_key(row):
            """--sort $column: $order first, values not read (None) last, ties as found."""
            value = $value
            if isinstance(value, bool):
                value = int(value)
            if value is None:
                return (True, "", 0)
            $negate
            # The type's name first: a column mixing numbers and text still sorts.
            return (False, type(value).__name__, value)
        ''',
        column=column.name,
        order=order,
        value=value,
        negate=negate,
    )
    return True


def _require_registry(prog: Program) -> None:
    """
    The scripts find pools in the page_pools registry, which came with
    pool->user (v6.8); refuse without it.
    """
    try:
        prog.type("struct page_pool").member("user")
    except LookupError:
        raise click.UsageError(
            "--drgn: the scripts walk the page_pools registry (Linux 6.8+), "
            "which this kernel does not have; run the command without --drgn"
        ) from None


def drgn_option(generator: CodeGenerator, *, needs_pools: bool = True) -> Callable[[F], F]:
    """
    Add ``--drgn`` to a command: with it, the command prints what
    ``generator(prog, **params)`` returns (the command's parameters, without
    ``--json``) and exits 0 instead of running.  Placed above
    ``@click.pass_obj``.  ``prog`` may have types and no memory (``-s
    vmlinux`` or ``--btf`` without a core): generators read types only.
    """

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, drgn_code: bool, **kwargs: Any) -> Any:
            if not drgn_code:
                return f(*args, **kwargs)
            # The code depends on types alone: -s vmlinux or --btf without a
            # core are enough.
            prog = click.get_current_context().obj.types_program()
            if needs_pools:
                _require_registry(prog)
            kwargs.pop("as_json", None)
            click.echo(generator(prog, **kwargs), nl=False)
            return 0

        return click.option(
            "--drgn",
            "drgn_code",
            is_flag=True,
            help="print drgn code that computes these rows (as JSON Lines) for this "
            "kernel, instead of running",
        )(wrapper)  # type: ignore[return-value]

    return decorate


def no_drgn_option(why: str) -> Callable[[F], F]:
    """
    ``--drgn`` on a command that has no script of its own (a fleet command):
    a usage error saying ``why`` and where the scripts are, instead of click's
    bare "no such option".  Hidden from the help, which lists real options.
    """

    def refuse(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            raise click.UsageError(f"--drgn: {ctx.info_name} has no drgn script: {why}")

    return click.option(
        "--drgn",
        is_flag=True,
        hidden=True,
        expose_value=False,
        is_eager=True,
        callback=refuse,
    )
