"""
Kernel log
----------

The page-pool messages of the kernel's printk ring buffer, read with drgn's
:func:`~drgn.helpers.linux.printk.get_printk_records`, each linked to the
pool it names.  What the kernel prints (Linux 7.3 ``.rodata``):

- ``page_pool_release_retry()``, every 60 s while a detached pool that
  netlink cannot show (no netdev, or ``NET_PTR_POISON``) still has pages out:
  ``"%s() stalled pool shutdown: id %u, %d inflight %d sec"``.  Before the
  Linux kernel commit "net: page_pool: mute the periodic warning for visible
  page pools" (in v6.8) it named no id and warned for every pool:
  ``"%s() stalled pool shutdown %d inflight %d sec"``;
- ``page_pool_empty_ring()``: ``"%s() page_pool refcnt %d violation"``;
- devmem TCP: ``"dmabuf sg entry ... not aligned to niov size"`` and
  ``"TCP: Found non-dmabuf skb with net_iov"``;
- ``WARN()``s in ``net/core/page_pool*.c``, ``net/core/devmem.c``,
  ``io_uring/zcrx.c`` and the netmem headers.  Since Linux 6.19 the line is
  ``"WARNING: FILE:LINE at FUNC+OFF/SIZE, CPU#N: COMM/PID"``, before
  ``"WARNING: CPU: N PID: P at FILE:LINE FUNC+OFF/SIZE"``.

Only the stalled-shutdown message (v6.8+) names a pool; the others are
returned with no pool, by subsystem.
"""

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

import drgn
from drgn import Program

__all__ = ("LogMessage", "KernelLog", "page_pool_messages")

# Sources whose WARN()s concern page pools and network memory.
_FILES = re.compile(
    r"(?:net/core/(?:page_pool\w*|devmem|netmem\w*)\.[ch]|io_uring/zcrx\.[ch]"
    r"|include/net/(?:page_pool/\w+|netmem)\.h)"
)
_FUNCS = re.compile(
    r"(?:page_pool_|__page_pool_|net_devmem_|mp_dmabuf_|io_zcrx_|io_pp_zc_|netmem_)"
)
_WARNING = re.compile(
    r"WARNING: (?:CPU: \d+ PID: \d+ at )?(?:(?P<file>\S+?):(?P<line>\d+) )?(?:at )?"
    r"(?P<func>[\w.]+)\+0x"
)
_STALLED = re.compile(
    r"(?P<func>\w+)\(\)[^\n]*? stalled pool shutdown(?:: id (?P<id>\d+),)? "
    r"(?P<inflight>-?\d+) inflight (?P<sec>-?\d+) sec"
)
_REFCNT = re.compile(r"(?P<func>\w+)\(\) page_pool refcnt (?P<refcnt>-?\d+) violation")
_DEVMEM = re.compile(
    r"dmabuf sg entry .* not aligned to niov size|Found non-dmabuf skb with net_iov"
)


@dataclass(frozen=True)
class LogMessage:
    """A page-pool message of the kernel log."""

    seq: int
    timestamp: int  # nanoseconds since boot (the printk clock)
    level: int
    text: str
    kind: str  # "stalled-shutdown", "refcnt-violation", "warning", "devmem", "zcrx"
    pool_id: Optional[int]  # the pool it names
    inflight: Optional[int]  # stalled-shutdown: pages still out
    seconds: Optional[int]  # stalled-shutdown: seconds since the pool was destroyed


@dataclass(frozen=True)
class KernelLog:
    """
    The kernel log's page-pool messages; ``error`` says why the log could not
    be read (``messages`` is then empty and means nothing).
    """

    records: int  # records in the ring buffer
    messages: Tuple[LogMessage, ...]
    error: Optional[str] = None

    def of_pool(self, pool_id: int) -> List[LogMessage]:
        return [m for m in self.messages if m.pool_id == pool_id]


def classify(text: str) -> Optional[Tuple[str, Optional[int], Optional[int], Optional[int]]]:
    """
    Whether a log line is a page-pool message: its kind, and the pool id,
    in-flight count and seconds it names; None for other lines.
    """
    m = _STALLED.search(text)
    if m:
        pool_id = int(m["id"]) if m["id"] is not None else None
        return "stalled-shutdown", pool_id, int(m["inflight"]), int(m["sec"])
    if _REFCNT.search(text):
        return "refcnt-violation", None, None, None
    m = _WARNING.search(text)
    if m and (
        (m["file"] and _FILES.fullmatch(m["file"])) or (not m["file"] and _FUNCS.match(m["func"]))
    ):
        return "warning", None, None, None
    if _DEVMEM.search(text):
        return "devmem", None, None, None
    if "zcrx" in text:
        return "zcrx", None, None, None
    return None


# The kernel's ring buffers are at most 2**25 descriptors and 2**31 bytes
# (CONFIG_LOG_BUF_SHIFT <= 25, log_buf_len at boot <= 2 GiB).
MAX_COUNT_BITS = 25
MAX_SIZE_BITS = 31


def _corruption(prb: drgn.Object) -> str:
    """
    Why drgn's reader must not walk this ring buffer: it visits every id from
    ``tail_id`` to ``head_id``, so corrupt ids would make it loop for 2**62
    steps.  Empty when the ring buffer is sane.
    """
    ring = prb.desc_ring.read_()
    count_bits = ring.count_bits.value_()
    size_bits = prb.text_data_ring.size_bits.value_()
    if count_bits > MAX_COUNT_BITS:
        return f"desc_ring.count_bits {count_bits}"
    if size_bits > MAX_SIZE_BITS:
        return f"text_data_ring.size_bits {size_bits}"
    bits = drgn.sizeof(ring.head_id.counter) * 8 - 2  # DESC_ID_MASK: the state takes 2
    span = (ring.head_id.counter.value_() - ring.tail_id.counter.value_()) & ((1 << bits) - 1)
    if span >= 1 << count_bits:
        return f"{span + 1} records between tail_id and head_id in a ring of {1 << count_bits}"
    return ""


def page_pool_messages(prog: Program) -> KernelLog:
    """
    The page-pool messages of the target's kernel log (printk ring buffer,
    Linux 5.10+ lockless or the older structured buffer, as drgn reads them).
    """
    from drgn.helpers.linux.printk import get_printk_records

    try:
        prb = prog["prb"]
    except KeyError:
        # Kernels before v5.10 (log_buf) are below this tool's floor.
        return KernelLog(0, (), "no printk ring buffer (prb) in the target's symbols or types")
    try:
        corrupt = _corruption(prb)
        if corrupt:
            return KernelLog(
                0, (), f"cannot read the kernel log: corrupt printk ring buffer: {corrupt}"
            )
        records = get_printk_records(prog)
    except (LookupError, drgn.FaultError, ValueError, TypeError, AttributeError) as e:
        what = e.args[0] if e.args else type(e).__name__
        return KernelLog(0, (), f"cannot read the kernel log: {what}")
    messages = []
    for record in records:
        text = record.text.decode(errors="replace")
        found = classify(text)
        if found is not None:
            kind, pool_id, inflight, seconds = found
            messages.append(
                LogMessage(
                    record.seq,
                    record.timestamp,
                    record.level,
                    text,
                    kind,
                    pool_id,
                    inflight,
                    seconds,
                )
            )
    return KernelLog(len(records), tuple(messages))
