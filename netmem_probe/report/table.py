"""
Tables for people, one implementation for every command.

A command describes its columns once (:class:`Column`: the JSON key shown,
how to show it, whether it is a number) and hands over its JSON records;
:func:`table_options` gives the command ``--no-header``, ``--columns LIST``
and ``--sort KEY``, and the :class:`Table` it passes prints the records:

- numbers right-aligned, text left-aligned, ``-`` for a value not read;
- one vocabulary: a column is named by its JSON key, and headed by it in
  capitals (``pp-ref-count`` is ``PP-REFS`` everywhere, see
  :data:`HEADERS`);
- full width when stdout is not a terminal (a pipe, a file), fitted to the
  terminal otherwise: free-text columns (evidence, details) are cut with
  ``…``; values that name something (addresses, ids) never are;
- colour (a leaked verdict, a GROWING pool, a detached one) only on a
  terminal, and never when ``NO_COLOR`` is set (https://no-color.org).
"""

import dataclasses
import functools
import os
import shutil
import sys
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    TextIO,
    Tuple,
    TypeVar,
)

import click

__all__ = ("HEADERS", "Column", "Table", "show_hex", "table_options")

Record = Dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
R = TypeVar("R", bound=Record)

#: Headers that are not simply the JSON key in capitals.
HEADERS = {
    "pp-ref-count": "PP-REFS",
    "inflight-mem": "MEM",
    "napi-id": "NAPI-ID",
}

GAP = "  "
ELLIPSIS = "…"


def show_hex(value: Any) -> str:
    """A number in hex (a pfn, an index), as the tables show them; text as it is."""
    return hex(value) if isinstance(value, int) else str(value)


def header_of(name: str) -> str:
    return HEADERS.get(name, name.upper())


@dataclass(frozen=True)
class Column:
    """
    One column: the record key ``name`` it shows (what ``--columns`` and
    ``--sort`` take), and how.

    :param get: the value from a record (default: ``record[name]``), what
        ``--sort`` orders by.
    :param cell: what the table shows for a record, if not that value.
    :param show: the value shown as text (default: ``str``); None is ``-``.
    :param number: right-aligned.
    :param largest_first: ``--sort`` puts the largest value first (counts,
        sizes, ages), else the smallest (ids, addresses, names).
    :param width: the least width; a streamed table's column width.
    :param free_text: may be cut to fit the terminal.
    :param color: the colour of a record's cell (a click colour name), or None.
    :param header: instead of the vocabulary's header.
    """

    name: str
    get: Optional[Callable[[Record], Any]] = None
    cell: Optional[Callable[[Record], Any]] = None
    show: Callable[[Any], str] = str
    number: bool = False
    largest_first: bool = False
    width: int = 0
    free_text: bool = False
    color: Optional[Callable[[Record], Optional[str]]] = None
    header: str = ""

    @property
    def title(self) -> str:
        return self.header or header_of(self.name)

    def value(self, record: Record) -> Any:
        return self.get(record) if self.get is not None else record.get(self.name)

    def text(self, record: Record) -> str:
        value = self.cell(record) if self.cell is not None else self.value(record)
        return "-" if value is None or value == "" else self.show(value)


def _sort_key(column: Column) -> Callable[[Record], Tuple[bool, str, Any]]:
    def key(record: Record) -> Tuple[bool, str, Any]:
        value = column.value(record)
        if isinstance(value, bool):
            value = int(value)
        if value is None:
            return (True, "", 0)  # not read: last, whatever the order
        if column.largest_first and isinstance(value, (int, float)):
            value = -value
        # The type first: a column mixing numbers and text still sorts.
        return (False, type(value).__name__, value)

    return key


@dataclass
class Table:
    """
    How a command prints its tables: the columns chosen, sorted how, with or
    without the header, how wide and whether in colour.
    """

    columns: Sequence[Column]
    sort: Optional[Column] = None
    header: bool = True
    width: Optional[int] = None  # the terminal's; None: full width
    color: bool = False
    out: Optional[TextIO] = None
    chosen: bool = False  # the columns come from --columns

    def defaults(self, columns: Sequence[Column]) -> "Table":
        """This table with ``columns`` unless ``--columns`` chose others."""
        return self if self.chosen else dataclasses.replace(self, columns=columns)

    # -- records -----------------------------------------------------------

    def sorted(self, records: Iterable[R]) -> List[R]:
        """``records`` in ``--sort`` order (stable; as given without it)."""
        return self.sorted_by(records, lambda record: record)

    def sorted_by(self, items: Iterable[T], record: Callable[[T], Record]) -> List[T]:
        """``items`` in ``--sort`` order, each sorted by its ``record(item)``."""
        items = list(items)
        if self.sort is None:
            return items
        key = _sort_key(self.sort)
        return sorted(items, key=lambda item: key(record(item)))

    # -- whole tables --------------------------------------------------------

    def print(self, records: Iterable[Record], indent: str = "") -> None:
        """A table of ``records``, its widths fitted to them."""
        rows = self.sorted(records)
        cells = [[c.text(r) for c in self.columns] for r in rows]
        widths = [
            max([c.width, len(c.title) if self.header else 0] + [len(row[i]) for row in cells])
            for i, c in enumerate(self.columns)
        ]
        widths = self._fit(widths, len(indent))
        self._write_header(widths, indent)
        for record, row in zip(rows, cells):
            self._write_row(record, row, widths, indent)

    # -- streamed tables -----------------------------------------------------

    def stream(self, records: Iterable[Record], indent: str = "") -> Iterator[Record]:
        """
        Print ``records`` as they come, in the columns' own widths, and
        yield each after its line (so the caller can count them).  With
        ``--sort`` they are all read first.
        """
        if self.sort is not None:
            rows = self.sorted(records)
            self.print(rows, indent)
            yield from rows
            return
        widths = self._fit(
            [max(c.width, len(c.title) if self.header else 0) for c in self.columns], len(indent)
        )
        self._write_header(widths, indent)
        for record in records:
            self._write_row(record, [c.text(record) for c in self.columns], widths, indent)
            yield record

    # -- drawing -----------------------------------------------------------

    def _fit(self, widths: List[int], indent: int) -> List[int]:
        """Cut free-text columns, widest first, until the table fits the terminal."""
        if self.width is None:
            return widths
        widths = list(widths)
        excess = indent + sum(widths) + len(GAP) * (len(widths) - 1) - self.width
        while excess > 0:
            free = [
                i
                for i, c in enumerate(self.columns)
                if c.free_text and widths[i] > max(len(c.title), 8)
            ]
            if not free:
                break
            i = max(free, key=lambda j: widths[j])
            cut = min(excess, widths[i] - max(len(self.columns[i].title), 8))
            widths[i] -= cut
            excess -= cut
        return widths

    def _line(self, texts: Sequence[str], widths: Sequence[int], colors: Sequence[Any]) -> str:
        parts = []
        for column, text, width, color in zip(self.columns, texts, widths, colors):
            if len(text) > width and column.free_text:
                text = text[: max(0, width - 1)] + ELLIPSIS
            pad = " " * max(0, width - len(text))
            if color and self.color:
                text = click.style(text, fg=color)
            parts.append(pad + text if column.number else text + pad)
        return GAP.join(parts).rstrip()

    def _write_header(self, widths: Sequence[int], indent: str) -> None:
        if not self.header:
            return
        none = [None] * len(widths)
        self._write(indent + self._line([c.title for c in self.columns], widths, none))
        self._write(indent + GAP.join("-" * w for w in widths))

    def _write_row(
        self, record: Record, texts: Sequence[str], widths: Sequence[int], indent: str
    ) -> None:
        colors = [c.color(record) if c.color is not None else None for c in self.columns]
        self._write(indent + self._line(texts, widths, colors))

    def _write(self, line: str) -> None:
        (self.out or sys.stdout).write(line + "\n")


def _lookup(columns: Sequence[Column], text: str, param: str) -> Column:
    """A column by its name or header, in any case."""
    wanted = text.strip().lower()
    for column in columns:
        if wanted == column.name:
            return column
    for column in columns:
        if wanted == column.title.lower():
            return column
    names = ", ".join(c.name for c in columns)
    raise click.BadParameter(f"no column {text.strip()!r} (choose from {names})", param_hint=param)


def terminal_width(stream: TextIO) -> Optional[int]:
    """The terminal's width if ``stream`` is one; None (full width) otherwise."""
    return shutil.get_terminal_size().columns if _isatty(stream) else None


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and not when NO_COLOR is set to anything."""
    return _isatty(stream) and not os.environ.get("NO_COLOR")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Columns(click.ParamType):
    """Column names (or headers, in any case), completed in the shell; ``many``: a comma list."""

    def __init__(self, columns: Sequence[Column], many: bool) -> None:
        self.columns = columns
        self.many = many
        self.name = "LIST" if many else "KEY"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Any) -> Any:
        if isinstance(value, (Column, list)):
            return value
        hint = "--columns" if self.many else "--sort"
        if not self.many:
            return _lookup(self.columns, str(value), hint)
        names = [n for n in str(value).split(",") if n.strip()]
        if not names:
            self.fail("name at least one column", param, ctx)
        return [_lookup(self.columns, n, hint) for n in names]

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
        from click.shell_completion import CompletionItem

        done, _, last = incomplete.rpartition(",") if self.many else ("", "", incomplete)
        prefix = done + "," if done else ""
        return [
            CompletionItem(prefix + c.name) for c in self.columns if c.name.startswith(last.lower())
        ]


def table_options(
    columns: Sequence[Column],
    default: Sequence[str],
    sort: Optional[str] = None,
) -> Callable[[F], F]:
    """
    Add ``--no-header``, ``--columns LIST`` and ``--sort KEY`` to a command,
    which then gets a ``table`` argument (a :class:`Table`) instead.  Placed
    above ``@drgn_option`` and ``@click.pass_obj``.

    :param columns: every column the command can show.
    :param default: the names of those shown without ``--columns``.
    :param sort: the name of the default ``--sort`` column, if any.
    """
    by_name: Dict[str, Column] = {c.name: c for c in columns}
    shown = [by_name[n] for n in default]
    names = [c.name for c in columns]

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(
            *args: Any,
            table_columns: Optional[List[Column]],
            no_header: bool,
            sort_column: Optional[Column],
            **kwargs: Any,
        ) -> Any:
            out = sys.stdout
            kwargs["table"] = Table(
                columns=table_columns or shown,
                chosen=bool(table_columns),
                sort=sort_column,
                header=not no_header,
                width=terminal_width(out),
                color=use_color(out),
            )
            return f(*args, **kwargs)

        options = [
            click.option(
                "--sort",
                "sort_column",
                default=sort,
                show_default=sort is not None,
                type=_Columns(columns, many=False),
                help="order the rows (and JSON records) by this column; counts, "
                "sizes and ages largest first",
            ),
            click.option(
                "--columns",
                "table_columns",
                type=_Columns(columns, many=True),
                help="the table's columns, comma-separated, from: " + ", ".join(names),
            ),
            click.option("--no-header", is_flag=True, help="print the table without its header"),
        ]
        decorated: Any = wrapper
        for option in options:
            decorated = option(decorated)
        return decorated

    return decorate
