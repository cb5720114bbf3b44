"""
Bounded, validating walks over the kernel's linked structures.

Unlike drgn's ``xa_for_each()`` and ``hlist_for_each()``, these walks are made
for memory that may be corrupt or changing underneath (a crash dump of a broken
kernel, a live ``/proc/kcore``): every walk has a step cap and cycle detection,
checks back-pointers where the structure has them, and reports a bad node to a
:class:`Problems` collector and skips it instead of raising, so the rest of the
output still comes.
"""

import struct
from typing import Callable, Iterator, List, NamedTuple, Optional, Set, Tuple

import drgn
from drgn import Program, ProgramFlags
from drgn.helpers import ValidationError

from netmem_probe.kernel.cache import per_program
from netmem_probe.kernel.platform import byte_order, word_format, word_size

__all__ = (
    "CorruptionError",
    "LIVE_RETRIES",
    "Problem",
    "Problems",
    "attempts",
    "hlist_nodes",
    "inconsistent",
    "list_nodes",
    "ptr_ring_entries",
    "ptr_ring_slots",
    "rb_nodes",
    "read_pointer",
    "read_words",
    "wrap",
    "xa_count",
    "xa_entries",
    "xa_slots",
)

MAX_LIST_STEPS = 1 << 20
MAX_XA_ENTRIES = 1 << 22
# How often a record that fails validation is read again on a live kernel,
# where it may just have been caught mid-update (drgn's slab helpers retry
# the same way); a core dump does not change, so once is enough there.
LIVE_RETRIES = 3


class CorruptionError(ValidationError):
    """A kernel structure failed validation."""


class Problem(NamedTuple):
    what: str
    address: int
    reason: str

    def __str__(self) -> str:
        return f"{self.what} at {self.address:#x}: {self.reason}"


class Problems:
    """Collects objects skipped because they were unreadable or inconsistent."""

    def __init__(self) -> None:
        self.items: List[Problem] = []
        self._seen: Set[Problem] = set()

    def add(self, what: str, address: int, reason: str) -> None:
        problem = Problem(what, address, reason)
        # The same object found bad by two walks is one skipped object.
        if problem not in self._seen:
            self._seen.add(problem)
            self.items.append(problem)

    def fault(self, what: str, address: int, error: Exception) -> None:
        if isinstance(error, drgn.FaultError):
            reason = f"unreadable ({error.message} at {error.address:#x})"
        else:
            reason = str(error)
        self.add(what, address, reason)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _report(problems: Optional[Problems], what: str, address: int, reason: str) -> None:
    if problems is None:
        raise CorruptionError(f"{what} at {address:#x}: {reason}")
    problems.add(what, address, reason)


def wrap(address: int) -> int:
    """
    An address computed in Python (a pointer read from memory plus an
    offset) wrapped to 64 bits, as the CPU computes it: a corrupt pointer
    near the top of the address space then faults when read, instead of
    making drgn raise OverflowError for an int that no u64 holds.
    """
    return address & 0xFFFFFFFFFFFFFFFF


def read_pointer(prog: Program, address: int) -> int:
    return prog.read_word(wrap(address))


@per_program
def attempts(prog: Program) -> int:
    """How many times to read a record that fails validation (see LIVE_RETRIES)."""
    # Asked once per record read: prog.flags builds an enum each time.
    return LIVE_RETRIES if prog.flags & ProgramFlags.IS_LIVE else 1


def inconsistent(prog: Program, reason: str) -> str:
    """
    The reason for a record that failed on every attempt: on a live kernel
    flagged inconsistent (faults keep their "unreadable" wording).
    """
    if not prog.flags & ProgramFlags.IS_LIVE:
        return reason
    if reason.startswith("unreadable"):
        return f"{reason} in each of {LIVE_RETRIES} reads"
    return f"inconsistent after {LIVE_RETRIES} reads: {reason}"


# (address, reason) of the node where a walk stopped, or None if it ended.
_Failure = Optional[Tuple[int, str]]


def _two_words(prog: Program, address: int) -> Tuple[int, int]:
    """The two pointers of a ``list_head`` or ``hlist_node`` (next, then prev or pprev)."""
    nxt, back = struct.unpack(word_format(prog, 2), prog.read(address, 2 * word_size(prog)))
    return nxt, back


def _walk_list(prog: Program, head: int, limit: int) -> Tuple[List[int], _Failure]:
    nodes: List[int] = []
    prev = head
    seen: Set[int] = {head}
    try:
        node = read_pointer(prog, head)
    except drgn.FaultError as e:
        return nodes, (head, f"unreadable head ({e.message})")
    for _ in range(limit):
        if node == head:
            return nodes, None
        if node in seen:
            return nodes, (head, f"cycle at node {node:#x}")
        seen.add(node)
        try:
            nxt, back = _two_words(prog, node)
        except drgn.FaultError as e:
            return _and_back(prog, head, nodes, limit), (node, f"unreadable node ({e.message})")
        if back != prev:
            return (
                _and_back(prog, head, nodes, limit),
                (node, f"node's prev is {back:#x}, expected {prev:#x}"),
            )
        nodes.append(node)
        prev, node = node, nxt
    return nodes, (head, f"more than {limit} nodes")


def _and_back(prog: Program, head: int, nodes: List[int], limit: int) -> List[int]:
    """
    A list_head list is doubly linked: when the forward walk breaks, walk
    back from the head through ``prev`` (checking ``prev->next``) to recover
    the nodes after the break, up to a node the forward walk reached.
    """
    known = set(nodes)
    tail: List[int] = []
    later = head
    try:
        node = read_pointer(prog, head + word_size(prog))
    except drgn.FaultError:
        return nodes
    for _ in range(limit - len(nodes)):
        if node in known or node == head or node in tail:
            break
        try:
            nxt, back = _two_words(prog, node)
        except drgn.FaultError:
            break
        if nxt != later:
            break
        tail.append(node)
        later, node = node, back
    return nodes + tail[::-1]


def _walk_hlist(prog: Program, head: int, limit: int) -> Tuple[List[int], _Failure]:
    nodes: List[int] = []
    link = head  # address of the pointer that points at the next node
    seen: Set[int] = set()
    try:
        node = read_pointer(prog, head)
    except drgn.FaultError as e:
        return nodes, (head, f"unreadable head ({e.message})")
    for _ in range(limit):
        if not node:
            return nodes, None
        if node in seen:
            return nodes, (head, f"cycle at node {node:#x}")
        seen.add(node)
        try:
            nxt, pprev = _two_words(prog, node)
        except drgn.FaultError as e:
            return nodes, (node, f"unreadable node ({e.message})")
        if pprev != link:
            return nodes, (node, f"node's pprev is {pprev:#x}, expected {link:#x}")
        nodes.append(node)
        link, node = node, nxt
    return nodes, (head, f"more than {limit} nodes")


def _validated_walk(
    prog: Program,
    walk: Callable[[Program, int, int], Tuple[List[int], "_Failure"]],
    head: int,
    what: str,
    problems: Optional[Problems],
    limit: int,
) -> Iterator[int]:
    # The whole walk is validated before its nodes are handed out, so that on
    # a live kernel a walk torn by a concurrent list_del() is simply walked
    # again instead of yielding a mix of two moments.
    for _ in range(attempts(prog)):
        nodes, failure = walk(prog, head, limit)
        if failure is None:
            break
    if failure is not None:
        _report(problems, what, failure[0], inconsistent(prog, failure[1]))
    yield from nodes


def list_nodes(
    prog: Program,
    head: int,
    *,
    what: str = "list",
    problems: Optional[Problems] = None,
    limit: int = MAX_LIST_STEPS,
) -> Iterator[int]:
    """
    Addresses of the ``struct list_head`` nodes on the list at ``head``
    (excluding the head), checking ``next->prev`` at every step.  A walk that
    fails validation (retried on a live kernel) is reported; the nodes before
    the failure are still given, and those after it as far as a walk back
    from the head reaches.
    """
    return _validated_walk(prog, _walk_list, head, what, problems, limit)


def hlist_nodes(
    prog: Program,
    head: int,
    *,
    what: str = "hlist",
    problems: Optional[Problems] = None,
    limit: int = MAX_LIST_STEPS,
) -> Iterator[int]:
    """
    Addresses of the ``struct hlist_node`` nodes on the hlist at ``head``,
    checking each node's ``pprev`` against the pointer that led to it (as
    :func:`list_nodes` for failures).
    """
    return _validated_walk(prog, _walk_hlist, head, what, problems, limit)


class _XaLayout(NamedTuple):
    size: int
    shift: int
    offset: int
    parent: int
    slots: int
    chunk_shift: int


@per_program
def _xa_layout(prog: Program) -> _XaLayout:
    node = prog.type("struct xa_node")
    nslots = node.member("slots").type.length
    layout = _XaLayout(
        drgn.sizeof(node),
        drgn.offsetof(node, "shift"),
        drgn.offsetof(node, "offset"),
        drgn.offsetof(node, "parent"),
        drgn.offsetof(node, "slots"),
        nslots.bit_length() - 1,
    )
    return layout


def _xa_is_node(entry: int) -> bool:
    # xa_is_node() of include/linux/xarray.h: an internal entry above 4096 (the
    # kernel's own literal, not a page size; sibling, retry and zero entries are below).
    return entry & 3 == 2 and entry > 4096


def xa_entries(
    prog: Program,
    xa: int,
    *,
    what: str = "xarray",
    problems: Optional[Problems] = None,
    limit: int = MAX_XA_ENTRIES,
) -> Iterator[Tuple[int, int]]:
    """
    ``(index, entry)`` for every present entry of the ``struct xarray`` at
    ``xa``; internal entries (retry, zero, sibling) are skipped as in
    ``xa_for_each()``.  Each node is read once; nodes whose shift, slot offset
    or parent do not fit their place in the tree are reported and skipped.
    """
    for index, entry, _ in xa_slots(prog, xa, what=what, problems=problems, limit=limit):
        yield index, entry


def xa_slots(
    prog: Program,
    xa: int,
    *,
    what: str = "xarray",
    problems: Optional[Problems] = None,
    limit: int = MAX_XA_ENTRIES,
) -> Iterator[Tuple[int, int, int]]:
    """
    :func:`xa_entries` with where each entry is: ``(index, entry, address of
    the slot holding it)`` (``xa_head`` for a lone entry at index 0).
    """
    layout = _xa_layout(prog)
    head_off = drgn.offsetof(prog.type("struct xarray"), "xa_head")
    try:
        head = read_pointer(prog, xa + head_off)
    except drgn.FaultError as e:
        _report(problems, what, xa, f"unreadable ({e.message})")
        return
    if not head:
        return
    if not _xa_is_node(head):
        if head & 3 != 2:
            yield 0, head, xa + head_off
        return
    count = 0
    seen: Set[int] = set()
    # (node address, expected shift or None for the root, parent, offset, base index)
    stack: List[Tuple[int, Optional[int], int, int, int]] = [(head - 2, None, 0, 0, 0)]
    chunk = 1 << layout.chunk_shift
    size = word_size(prog)
    while stack:
        node, want_shift, parent, offset, base = stack.pop()
        if node in seen:
            _report(problems, what, node, "node visited twice (cycle)")
            continue
        seen.add(node)
        for _ in range(attempts(prog)):
            raw, reason = _read_xa_node(prog, layout, node, want_shift, parent, offset)
            if raw is not None:
                break
        if raw is None:
            _report(problems, what, node, inconsistent(prog, reason))
            continue
        shift = raw[layout.shift]
        slots = struct.unpack_from(word_format(prog, chunk), raw, layout.slots)
        children = []
        for slot, entry in enumerate(slots):
            if not entry:
                continue
            index = base + (slot << shift)
            if _xa_is_node(entry):
                if shift == 0:
                    _report(problems, what, node, f"slot {slot} points to a node below shift 0")
                    continue
                children.append((entry - 2, shift - layout.chunk_shift, node, slot, index))
                continue
            if entry & 3 == 2:
                continue  # sibling, retry or zero entry
            count += 1
            if count > limit:
                _report(problems, what, xa, f"more than {limit} entries")
                return
            yield index, entry, node + layout.slots + slot * size
        stack.extend(reversed(children))


def _read_xa_node(
    prog: Program, layout: _XaLayout, node: int, want_shift: Optional[int], parent: int, offset: int
) -> Tuple[Optional[bytes], str]:
    """An xa_node read in one go, or None and why it does not fit its place in the tree."""
    try:
        raw = prog.read(node, layout.size)
    except drgn.FaultError as e:
        return None, f"unreadable node ({e.message})"
    shift = raw[layout.shift]
    size = word_size(prog)
    node_parent = int.from_bytes(raw[layout.parent : layout.parent + size], byte_order(prog))
    # Indexes are unsigned longs: the root of an XArray keyed by addresses has
    # shift 60 on a 64-bit kernel, the highest multiple of XA_CHUNK_SHIFT below
    # BITS_PER_LONG.
    if (
        shift % layout.chunk_shift
        or shift >= 8 * size
        or (want_shift is not None and shift != want_shift)
    ):
        return None, f"bad node shift {shift}"
    if want_shift is not None and (raw[layout.offset] != offset or node_parent != parent):
        return None, "node's parent/offset do not match its slot"
    return raw, ""


def xa_count(prog: Program, xa: int, problems: Optional[Problems] = None) -> int:
    return sum(1 for _ in xa_entries(prog, xa, problems=problems))


def read_words(prog: Program, address: int, count: int) -> Tuple[int, ...]:
    """``count`` words of target memory at ``address``, as unsigned integers."""
    return struct.unpack(
        word_format(prog, count), prog.read(wrap(address), word_size(prog) * count)
    )


def ptr_ring_slots(
    producer: int, consumer_head: int, size: int, queue: int, prog: Program
) -> List[int]:
    """
    The slots of a ``struct ptr_ring`` that hold entries, oldest first:
    ``consumer_head`` up to ``producer`` (wrapping).  Consumed slots are
    zeroed lazily, in batches, so non-NULL slots outside that window are
    stale; when ``producer == consumer_head`` the ring is empty or full, told
    apart by the slot at ``consumer_head``.
    """
    if size <= 0 or not queue:
        return []
    if producer == consumer_head:
        first = read_words(prog, queue + word_size(prog) * consumer_head, 1)[0]
        count = size if first else 0
    else:
        count = (producer - consumer_head) % size
    return [(consumer_head + i) % size for i in range(count)]


def ptr_ring_entries(
    producer: int, consumer_head: int, size: int, queue: int, prog: Program
) -> List[int]:
    """The entries a ``struct ptr_ring`` holds (see :func:`ptr_ring_slots`)."""
    slots = ptr_ring_slots(producer, consumer_head, size, queue, prog)
    if not slots:
        return []
    words = read_words(prog, queue, size)
    return [words[slot] for slot in slots]


def rb_nodes(
    prog: Program, root: int, *, what: str, problems: Problems, limit: int = MAX_LIST_STEPS
) -> List[int]:
    """
    The ``struct rb_node`` addresses of the rbtree whose top node is
    ``root`` (the value of an ``rb_root``'s ``rb_node``), parents before
    children.  A child whose parent pointer is not the node it hangs from
    (a loop, a node of another tree), an unreadable node or more than
    ``limit`` nodes is reported under ``what`` and not followed further;
    the rest of the tree still is.
    """
    rb_type = prog.type("struct rb_node")
    word = word_size(prog)
    parent_at, right_at, left_at = (
        drgn.offsetof(rb_type, m) // word for m in ("__rb_parent_color", "rb_right", "rb_left")
    )
    count = max(parent_at, right_at, left_at) + 1
    nodes: List[int] = []
    seen: Set[int] = set()
    pending = [(root, 0)]  # (node, the parent it must name)
    while pending:
        node, parent = pending.pop()
        if node in seen:
            problems.add(what, node, "tree loops")
            continue
        if len(nodes) >= limit:
            problems.add(what, root, f"more than {limit} nodes (corrupt?)")
            break
        seen.add(node)
        try:
            words = read_words(prog, node, count)
        except drgn.FaultError as e:
            problems.fault(what, node, e)
            continue
        if words[parent_at] & ~3 != parent:
            problems.add(what, node, f"parent is {words[parent_at] & ~3:#x}, not {parent:#x}")
            continue
        nodes.append(node)
        pending += [(words[at], node) for at in (right_at, left_at) if words[at]]
    return nodes
