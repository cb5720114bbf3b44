"""What every ring walker shares."""

import array
import struct
import sys
from typing import List, NamedTuple, Optional

from drgn import Program

from netmem_probe.kernel.platform import byte_order, word_format, word_size

__all__ = ("MAX_RING_SLOTS", "RingEntry", "check_ring_size", "words_of")

#: Larger rings than any driver posts (virtio allows 32768 descriptors);
#: a size beyond it is a corrupt ring, reported rather than walked.
MAX_RING_SLOTS = 1 << 16


class RingEntry(NamedTuple):
    """
    A posted buffer: rx ``queue``, ``slot`` in its ring, the ``address`` of
    the word naming it and that word's ``value``; ``skb`` when the value is
    a ``struct sk_buff *`` (whose frags and head hold the pages); ``ring``
    names the ring when a queue has more than one (bnxt's ``agg`` ring).
    """

    queue: int
    slot: int
    address: int
    value: int
    skb: bool = False
    ring: Optional[str] = None


def check_ring_size(what: str, size: int) -> int:
    """``size``, or ValueError if no ring can be that large."""
    if not 0 <= size <= MAX_RING_SLOTS:
        raise ValueError(f"{what}: ring size {size} is impossible (corrupt?)")
    return size


def words_of(prog: Program, raw: bytes, start: int, stride: int, count: int) -> List[int]:
    """
    The target word at ``start`` of each of ``count`` array elements
    ``stride`` bytes apart in ``raw`` (bytes read from the target).
    """
    size = word_size(prog)
    if start % size or stride % size:
        word = struct.Struct(word_format(prog))
        return [word.unpack_from(raw, start + i * stride)[0] for i in range(count)]
    # Word-aligned fields (all the rings'): one C-level conversion, then a slice.
    words = array.array(next(c for c in "IQ" if array.array(c).itemsize == size))
    words.frombytes(raw[: len(raw) - len(raw) % size])
    if byte_order(prog) != sys.byteorder:
        words.byteswap()
    first = start // size
    return words[first : first + count * (stride // size) : stride // size].tolist()
