"""What every ring walker shares."""

from dataclasses import dataclass

__all__ = ("MAX_RING_SLOTS", "RingEntry", "check_ring_size")

#: Larger rings than any driver posts (virtio allows 32768 descriptors);
#: a size beyond it is a corrupt ring, reported rather than walked.
MAX_RING_SLOTS = 1 << 16


@dataclass(frozen=True)
class RingEntry:
    """
    A posted buffer: rx ``queue``, ``slot`` in its ring, the ``address`` of
    the word naming it and that word's ``value``; ``skb`` when the value is
    a ``struct sk_buff *`` (whose frags and head hold the pages).
    """

    queue: int
    slot: int
    address: int
    value: int
    skb: bool = False


def check_ring_size(what: str, size: int) -> int:
    """``size``, or ValueError if no ring can be that large."""
    if not 0 <= size <= MAX_RING_SLOTS:
        raise ValueError(f"{what}: ring size {size} is impossible (corrupt?)")
    return size
