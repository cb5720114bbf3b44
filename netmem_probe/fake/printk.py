"""
The kernel log of a fake world: a printk ring buffer (``struct
printk_ringbuffer``, the lockless one of Linux 5.10+) laid out as
``kernel/printk/printk_ringbuffer.c`` lays it out, so that drgn's own
``get_printk_records()`` reads it:

- a descriptor ring of ``1 << count_bits`` ``struct prb_desc`` (state and
  id in ``state_var``, the text block's logical positions) with a parallel
  array of ``struct printk_info`` (sequence number, timestamp, level, text
  length);
- a text data ring of ``1 << size_bits`` bytes holding each record's block:
  its descriptor id (an ``unsigned long``) then its text, aligned to a long;
- ``prb`` pointing at the ``struct printk_ringbuffer``.

Records are finalized (``desc_finalized``), ids count from 0 and no block
wraps, as in a kernel that has not yet filled its buffer.
"""

from typing import TYPE_CHECKING, List, NamedTuple

import drgn

if TYPE_CHECKING:
    from netmem_probe.fake.world import World

__all__ = ("KERN_ERR", "KERN_INFO", "KERN_WARNING", "FakeKernelLog")

KERN_CRIT = 2
KERN_ERR = 3
KERN_WARNING = 4
KERN_INFO = 6


class _Record(NamedTuple):
    seconds: float
    level: int
    text: str
    caller_id: int


class FakeKernelLog:
    """The records of a world's kernel log, written at commit."""

    def __init__(self, world: "World") -> None:
        self.world = world
        self.records: List[_Record] = []
        world.before_commit(self._write)

    @staticmethod
    def supported(world: "World") -> bool:
        """Whether the world's layout has the lockless printk ring buffer."""
        return world.has_type("struct printk_ringbuffer") and world.has_symbol("prb")

    def log(
        self, seconds: float, text: str, level: int = KERN_INFO, caller_id: int = 0x80000000
    ) -> None:
        """A record printed ``seconds`` after boot (by CPU 0 unless ``caller_id`` says)."""
        self.records.append(_Record(seconds, level, text, caller_id))

    def _write(self) -> None:
        w = self.world
        records = sorted(self.records, key=lambda r: r.seconds)
        if not records:
            return
        word = 8
        count_bits = max(4, (len(records) - 1).bit_length())
        blocks = []
        lpos = 0
        for i, record in enumerate(records):
            text = record.text.encode()
            size = -(-(word + len(text)) // word) * word
            blocks.append((lpos, lpos + size, i.to_bytes(word, "little") + text))
            lpos += size
        # Strictly larger than the data: a block ending at the ring's end
        # would count as wrapped.
        size_bits = max(12, lpos.bit_length())
        data = bytearray(1 << size_bits)
        for begin, _, block in blocks:
            data[begin : begin + len(block)] = block
        data_addr = w.heap.alloc(len(data), 64)
        w.mem.write(data_addr, bytes(data))

        finalized = w.prog.constant("desc_finalized").value_()
        log_newline = w.prog.constant("LOG_NEWLINE").value_()
        state_shift = drgn.sizeof(w.type("unsigned long")) * 8 - 2
        descs = w.alloc("struct prb_desc", count=1 << count_bits)
        infos = w.alloc("struct printk_info", count=1 << count_bits)
        descs.value = [{} for _ in range(1 << count_bits)]
        infos.value = [{} for _ in range(1 << count_bits)]
        for i, (record, (begin, end, block)) in enumerate(zip(records, blocks)):
            descs.value[i] = {
                "state_var": {"counter": (finalized << state_shift) | i},
                "text_blk_lpos": {"begin": begin, "next": end},
            }
            infos.value[i] = {
                "seq": i,
                "ts_nsec": int(record.seconds * 1e9),
                "text_len": len(block) - word,
                "facility": 0,
                "flags": log_newline,
                "level": record.level,
                "caller_id": record.caller_id,
            }
        rb = w.alloc("struct printk_ringbuffer")
        rb.value = {
            "desc_ring": {
                "count_bits": count_bits,
                "descs": descs.addr,
                "infos": infos.addr,
                "head_id": {"counter": len(records) - 1},
                "tail_id": {"counter": 0},
            },
            "text_data_ring": {
                "size_bits": size_bits,
                "data": data_addr,
                "head_lpos": {"counter": lpos},
                "tail_lpos": {"counter": 0},
            },
            "fail": {"counter": 0},
        }
        w.global_("prb").value = rb.addr
