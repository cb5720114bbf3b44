"""What every ring walker shares."""

import struct
from dataclasses import dataclass
from typing import List, Optional

from drgn import Program

from netmem_probe.kernel.platform import word_format

__all__ = ("MAX_RING_SLOTS", "RingEntry", "check_ring_size", "words_of")

#: Larger rings than any driver posts (virtio allows 32768 descriptors);
#: a size beyond it is a corrupt ring, reported rather than walked.
MAX_RING_SLOTS = 1 << 16


@dataclass(frozen=True)
class RingEntry:
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
    word = struct.Struct(word_format(prog))
    return [word.unpack_from(raw, start + i * stride)[0] for i in range(count)]
