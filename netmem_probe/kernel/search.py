"""
RAM search
----------

Every aligned word of RAM (the valid pfn ranges, read physically) that
names one of a set of targets: equal to one of some values, or within one
of some address spans.  This is what finds the holders of pages and
net_iovs, and its cost must not grow with the number of targets: RAM is
read in big chunks and each chunk is matched vectorised with numpy:

1. one range test over the whole chunk (``word - lowest target <= width``)
   keeps the words that lie anywhere between the lowest and the highest
   target (in practice the kernel pointers of the chunk);
2. those few go through a table of the targets' 4 KiB blocks;
3. the survivors are matched exactly against the sorted bounds of the
   targets (values and spans merged into intervals) with ``searchsorted``.

drgn's ``search_memory_word()`` compares each word with every range it is
given in turn, so its cost grows with the number of targets.

With ``jobs`` > 1 the chunks are split over forked processes (each with its
own copy of the Program, reading the same target); they send back their hits
and the pages they could not read.  A kdump-compressed dump is bound by
decompression, which then runs on every core.
"""

import os
import pickle
import selectors
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import drgn
import numpy as np
from drgn import Program

from netmem_probe.kernel.netmem import memmap_description
from netmem_probe.kernel.platform import platform_facts
from netmem_probe.kernel.walk import Problems

__all__ = (
    "CHUNK_BYTES",
    "SearchOptions",
    "WordMatcher",
    "default_jobs",
    "direct_map_base",
    "ram_ranges",
    "search_words",
    "word_dtype",
)

#: Bytes read and matched at once: big enough that a read costs little more
#: than its copy, small enough to stay in the CPU's caches while matched.
CHUNK_BYTES = 2 << 20
#: Work handed to one process at a time, interleaved so that processes share
#: dense and sparse regions of RAM alike.
STRIPE_BYTES = 64 << 20
#: Below this much RAM one process searches it all: forking costs more.
MIN_PARALLEL_BYTES = 256 << 20
#: Bits of a value's 4 KiB block number that index the block table.
TABLE_BITS = 22

ProgressFn = Callable[[int, int], None]


def default_jobs() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SearchOptions:
    """
    How to search RAM.

    :param jobs: processes to split the search over; None for one per CPU this
        process may use (:func:`default_jobs`).
    :param progress: called with (bytes searched, bytes to search).
    :param min_parallel: RAM below which one process searches it all.
    """

    jobs: Optional[int] = None
    progress: Optional[ProgressFn] = None
    min_parallel: int = MIN_PARALLEL_BYTES


def direct_map_base(prog: Program, problems: Problems) -> Optional[int]:
    """``phys_to_virt(0)``; None, recorded, if it cannot be read (page_offset_base)."""
    try:
        return prog.cache["netmem_probe_direct_map"]
    except KeyError:
        pass
    from drgn.helpers.linux.mm import phys_to_virt

    try:
        base = prog.cache["netmem_probe_direct_map"] = phys_to_virt(prog, 0).value_()
    except drgn.FaultError as e:
        problems.fault("direct map base", e.address, e)
        return None
    except Exception as e:
        # drgn raises a bare Exception ("could not determine direct mapping
        # offset") when the kernel variables it derives the map from (arm64's
        # memstart_addr) read as nonsense: a corrupt dump, reported like a fault.
        problems.add("direct map base", 0, str(e))
        return None
    return base


def ram_ranges(prog: Program, problems: Problems) -> Optional[List[Tuple[int, int]]]:
    """
    The physical byte ranges [lo, hi) of RAM (the memmap's valid pfn ranges);
    None, recorded, if the memmap cannot be described.
    """
    memmap = memmap_description(prog, problems)
    if memmap is None:
        return None
    page_shift = platform_facts(prog).page_shift
    return [(start << page_shift, end << page_shift) for start, end in memmap.ranges]


class WordMatcher:
    """
    Matches arrays of words against values and spans.

    :param values: words to find.
    :param spans: [lo, hi) ranges of words to find.
    :param word_size: 8 or 4 bytes.
    :param little_endian: the byte order of the words.
    """

    def __init__(
        self,
        values: Iterable[int],
        spans: Iterable[Tuple[int, int]],
        word_size: int = 8,
        little_endian: bool = True,
    ) -> None:
        top = (1 << (8 * word_size)) - 1
        intervals = sorted(
            [(v, v + 1) for v in values if 0 <= v <= top]
            + [(max(lo, 0), min(hi, top + 1)) for lo, hi in spans if lo < hi and lo <= top]
        )
        merged: List[List[int]] = []
        for lo, hi in intervals:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.empty = not merged
        self.dtype = np.dtype(("<" if little_endian else ">") + ("u8" if word_size == 8 else "u4"))
        native = self.native = np.dtype("u8" if word_size == 8 else "u4")
        if self.empty:
            return
        # An interval may end at 2**64: searchsorted then needs its start only.
        self.bounds = np.array([b for lo, hi in merged for b in (lo, hi) if b <= top], dtype=native)
        self.lowest = native.type(merged[0][0])
        self.width = native.type(merged[-1][1] - 1 - merged[0][0])
        # The 4 KiB blocks the intervals touch, folded into 2**TABLE_BITS slots.
        self.table = np.zeros(1 << TABLE_BITS, dtype=bool)
        self.shift = native.type(12)
        self.mask = native.type((1 << TABLE_BITS) - 1)
        for lo, hi in merged:
            first, last = lo >> 12, (hi - 1) >> 12
            if last - first >= len(self.table):
                self.table[:] = True
                break
            a, b = first & int(self.mask), last & int(self.mask)
            if a <= b:
                self.table[a : b + 1] = True
            else:  # wraps around the table
                self.table[a:] = True
                self.table[: b + 1] = True
        self._scratch: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def match(self, buf: bytes) -> Tuple[np.ndarray, np.ndarray]:
        """(word indexes, values) of the words of ``buf`` that match."""
        words = np.frombuffer(buf, dtype=self.dtype)
        if self.empty or not len(words):
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=self.native)
        if self.dtype != self.native:  # a target of the other byte order
            words = words.astype(self.native)
        n = len(words)
        if self._scratch is None or len(self._scratch[0]) < n:
            self._scratch = (np.empty(n, dtype=words.dtype), np.empty(n, dtype=bool))
        diff, near = self._scratch[0][:n], self._scratch[1][:n]
        np.subtract(words, self.lowest, out=diff)
        np.less_equal(diff, self.width, out=near)
        index = np.flatnonzero(near)
        if not len(index):
            return index, words[index]
        candidates = words[index]
        keep = self.table[((candidates >> self.shift) & self.mask).astype(np.intp)]
        index, candidates = index[keep], candidates[keep]
        inside = np.searchsorted(self.bounds, candidates, side="right") & 1 == 1
        return index[inside], candidates[inside]


def word_dtype(prog: Program) -> np.dtype:
    """The numpy type of the target's words (size and byte order)."""
    size, little_endian = _word_format(prog)
    return np.dtype(("<" if little_endian else ">") + ("u8" if size == 8 else "u4"))


def _word_format(prog: Program) -> Tuple[int, bool]:
    facts = platform_facts(prog)
    return facts.word_size, facts.byte_order == "little"


def _search_ranges(
    prog: Program,
    matcher: WordMatcher,
    ranges: Sequence[Tuple[int, int]],
    page_size: int,
    on_hit: Callable[[int, int], None],
    on_unreadable: Callable[[int, str], None],
    on_progress: Callable[[int], None],
) -> None:
    """Search physical ``ranges``, calling back with physical addresses."""
    word = matcher.dtype.itemsize
    for lo, hi in ranges:
        address = lo
        # Past a fault that did not say where it was, read page by page up to here.
        careful = lo
        while address < hi:
            size = min(page_size if address < careful else CHUNK_BYTES, hi - address)
            try:
                buf = prog.read(address, size, True)
            except drgn.FaultError as e:
                if not address <= e.address < address + size and size > page_size:
                    careful = address + size
                    continue
                fault = e.address if address <= e.address < address + size else address
                page = fault // page_size * page_size
                if page > address:  # read what comes before the fault
                    try:
                        before = prog.read(address, page - address, True)
                    except drgn.FaultError:
                        careful = address + size
                        continue
                    _report(matcher, before, address, word, on_hit)
                resume = _after_hole(prog, page, hi, word) if _is_hole(e) else None
                if resume is None or resume <= page:
                    # An unreadable page of the dump (e.g. excluded from a kdump).
                    on_unreadable(page, e.message)
                    resume = page + page_size
                on_progress(min(resume, hi) - address)
                address = resume
                continue
            _report(matcher, buf, address, word, on_hit)
            on_progress(size)
            address += size


def _is_hole(error: drgn.FaultError) -> bool:
    """Whether a fault is a gap between the dump's memory segments, not a bad read."""
    return error.message.startswith("could not find")


def _after_hole(prog: Program, address: int, hi: int, word: int) -> Optional[int]:
    """
    Where the dump's memory resumes after ``address`` (below ``hi``; ``hi``
    if nowhere): drgn's own search walks its segments, so it finds the next
    one at once however big the gap.  None if it cannot tell.
    """
    it = prog.search_memory_word((0, (1 << (8 * word)) - 1))
    it.set_address_range(address, hi - 1, True)
    try:
        for found, _ in it:
            return found
    except drgn.FaultError as e:
        return e.address if address < e.address < hi else None
    return hi


def _report(
    matcher: WordMatcher, buf: bytes, address: int, word: int, on_hit: Callable[[int, int], None]
) -> None:
    index, values = matcher.match(buf)
    for i, value in zip(index.tolist(), values.tolist()):
        on_hit(address + i * word, value)


def _stripes(ranges: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """``ranges`` cut at multiples of STRIPE_BYTES."""
    stripes = []
    for lo, hi in ranges:
        while lo < hi:
            end = min(hi, (lo // STRIPE_BYTES + 1) * STRIPE_BYTES)
            stripes.append((lo, end))
            lo = end
    return stripes


def search_words(
    prog: Program,
    values: Set[int],
    spans: Sequence[Tuple[int, int]],
    problems: Problems,
    options: Optional[SearchOptions] = None,
    ranges: Optional[Sequence[Tuple[int, int]]] = None,
) -> Iterator[Tuple[int, int]]:
    """
    ``(direct-map address, value)`` of every aligned word of RAM (the valid
    pfn ranges, or only the physical byte ranges ``ranges`` [lo, hi) if
    given) equal to one of ``values`` or within one of ``spans`` ([lo, hi)),
    in address order.  Pages that cannot be read are skipped and recorded in
    ``problems``.
    """
    if not values and not spans:
        return
    options = options or SearchOptions()
    if ranges is None:
        ranges = ram_ranges(prog, problems)
    base = direct_map_base(prog, problems)
    if ranges is None or base is None:
        return  # recorded: without RAM's ranges and place there is nothing to search
    word_size, little_endian = _word_format(prog)
    matcher = WordMatcher(values, spans, word_size, little_endian)
    page_size = platform_facts(prog).page_size
    total = sum(hi - lo for lo, hi in ranges)
    if options.progress is not None:
        options.progress(0, total)
    jobs = options.jobs or default_jobs()
    if jobs > 1 and total >= options.min_parallel:
        hits, unreadable = _search_parallel(prog, matcher, ranges, page_size, jobs, total, options)
    else:
        hits, unreadable = [], []
        done = 0

        def on_progress(n: int) -> None:
            nonlocal done
            done += n
            if options.progress is not None:
                options.progress(done, total)

        _search_ranges(
            prog,
            matcher,
            ranges,
            page_size,
            lambda a, v: hits.append((a, v)),
            lambda a, m: unreadable.append((a, m)),
            on_progress,
        )
    for address, message in sorted(unreadable):
        problems.add("RAM", base + address, f"unreadable page, not searched ({message})")
    for address, value in sorted(hits):
        yield base + address, value


# -- processes ------------------------------------------------------------------

_HEADER = struct.Struct("<I")


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _worker(
    prog: Program,
    matcher: WordMatcher,
    stripes: Sequence[Tuple[int, int]],
    page_size: int,
    fd: int,
) -> None:
    """A child's work: search ``stripes``, send progress, then the results."""
    parent = os.getppid()
    hits: List[Tuple[int, int]] = []
    unreadable: List[Tuple[int, str]] = []
    pending = 0
    last = time.monotonic()

    def on_progress(n: int) -> None:
        nonlocal pending, last
        pending += n
        now = time.monotonic()
        if now - last >= 0.1:
            if os.getppid() != parent:  # the parent was killed: nobody wants the rest
                os._exit(1)
            _send(fd, ("progress", pending))
            pending, last = 0, now

    _search_ranges(
        prog,
        matcher,
        stripes,
        page_size,
        lambda a, v: hits.append((a, v)),
        lambda a, m: unreadable.append((a, m)),
        on_progress,
    )
    _send(fd, ("progress", pending))
    _send(fd, ("done", hits, unreadable))


def _search_parallel(
    prog: Program,
    matcher: WordMatcher,
    ranges: Sequence[Tuple[int, int]],
    page_size: int,
    jobs: int,
    total: int,
    options: SearchOptions,
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]]]:
    stripes = _stripes(ranges)
    jobs = min(jobs, len(stripes))
    children = {}
    try:
        for job in range(jobs):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: search, report, exit without unwinding the parent's stack
                status = 0
                try:
                    os.close(read_fd)
                    _worker(prog, matcher, stripes[job::jobs], page_size, write_fd)
                except BaseException as e:  # noqa: BLE001 - reported to the parent
                    status = 1
                    try:
                        _send(write_fd, ("error", f"{type(e).__name__}: {e}"))
                    except BaseException:  # noqa: BLE001 - the parent is gone
                        pass
                finally:
                    os._exit(status)
            os.close(write_fd)
            children[read_fd] = pid
        return _collect(children, total, options)
    finally:
        for fd, pid in children.items():
            try:
                os.close(fd)
            except OSError:
                pass
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)


def _collect(
    children: dict, total: int, options: SearchOptions
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]]]:
    hits: List[Tuple[int, int]] = []
    unreadable: List[Tuple[int, str]] = []
    buffers = {fd: b"" for fd in children}
    finished: Set[int] = set()
    done = 0
    open_fds = set(children)
    with selectors.DefaultSelector() as selector:
        for fd in children:
            selector.register(fd, selectors.EVENT_READ)
        while open_fds:
            for key, _ in selector.select():
                fd = key.fd
                data = os.read(fd, 1 << 20)
                if not data:
                    if fd not in finished:
                        raise RuntimeError(f"RAM search process {children[fd]} ended early")
                    selector.unregister(fd)
                    open_fds.discard(fd)
                    continue
                buffers[fd] += data
                while len(buffers[fd]) >= _HEADER.size:
                    (size,) = _HEADER.unpack_from(buffers[fd])
                    if len(buffers[fd]) < _HEADER.size + size:
                        break
                    message = pickle.loads(buffers[fd][_HEADER.size : _HEADER.size + size])
                    buffers[fd] = buffers[fd][_HEADER.size + size :]
                    if message[0] == "progress":
                        done += message[1]
                        if options.progress is not None:
                            options.progress(done, total)
                    elif message[0] == "done":
                        hits += message[1]
                        unreadable += message[2]
                        finished.add(fd)
                    else:
                        raise RuntimeError(f"RAM search process failed: {message[1]}")
    return hits, unreadable
