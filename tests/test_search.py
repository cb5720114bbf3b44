"""The RAM search engine: vectorised matching, holes, processes, progress."""

import random
import struct

import pytest
from conftest import FIXTURE_NAMES

from netmem_probe.kernel.search import SearchOptions, WordMatcher, direct_map_base, search_words
from netmem_probe.kernel.walk import Problems


def _brute(words, values, spans):
    return [
        (i, w) for i, w in enumerate(words) if w in values or any(lo <= w < hi for lo, hi in spans)
    ]


@pytest.mark.parametrize("word_size,little", [(8, True), (8, False), (4, True), (4, False)])
def test_matcher_finds_exactly_the_values_and_the_words_in_spans(word_size, little):
    rng = random.Random(word_size * 2 + little)
    top = (1 << (8 * word_size)) - 1
    base = top - (1 << (8 * word_size - 4))
    values = {rng.randrange(base, top) for _ in range(50)} | {top}
    spans = [
        (lo, lo + rng.choice((1, 8, 4096, 1 << 16)))
        for lo in (rng.randrange(base, top - (1 << 17)) for _ in range(50))
    ]
    # Words on every edge (just inside, just outside), noise, and zeros.
    words = [0, 1, top, base]
    for v in values:
        words += [v, v - 1, (v + 1) & top]
    for lo, hi in spans:
        words += [lo, lo - 1, hi - 1, hi, (lo + hi) // 2]
    words += [rng.randrange(0, top) for _ in range(2000)]
    fmt = ("<" if little else ">") + ("Q" if word_size == 8 else "I")
    buf = b"".join(struct.pack(fmt, w) for w in words)
    index, found = WordMatcher(values, spans, word_size, little).match(buf)
    assert list(zip(index.tolist(), found.tolist())) == _brute(words, values, spans)


def test_matcher_with_nothing_to_find_matches_nothing():
    index, found = WordMatcher(set(), []).match(bytes(4096))
    assert not len(index) and not len(found)


def test_a_span_over_the_whole_word_space_matches_every_word():
    words = [0, 5, (1 << 64) - 1]
    buf = struct.pack("<3Q", *words)
    index, found = WordMatcher(set(), [(0, 1 << 64)]).match(buf)
    assert found.tolist() == words


def _targets(prog):
    """The struct page and memory span of every page-pool page of the fixture's pools."""
    from netmem_probe.kernel.pages import PpPageScanner
    from netmem_probe.kernel.search import direct_map_base

    problems = Problems()
    values, spans = set(), []
    start = direct_map_base(prog, problems)
    shift = prog["PAGE_SHIFT"].value_()
    for page in PpPageScanner(prog, problems).pages():
        values.add(page.page)
        spans.append((start + (page.pfn << shift), start + ((page.pfn + 1) << shift)))
    return values, spans


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_processes_find_what_one_process_finds(fixture_program, name):
    prog = fixture_program(name)
    values, spans = _targets(prog)
    if not values:
        pytest.skip("no page-pool pages")
    one, many = Problems(), Problems()
    alone = list(search_words(prog, values, spans, one, SearchOptions(jobs=1)))
    split = list(search_words(prog, values, spans, many, SearchOptions(jobs=3, min_parallel=0)))
    assert alone and split == alone
    assert many.items == one.items


def test_progress_counts_up_to_all_of_ram(fixture_program):
    prog = fixture_program("linux-7.3-mixed")
    values, spans = _targets(prog)
    calls = []
    list(
        search_words(
            prog,
            values,
            spans,
            Problems(),
            SearchOptions(jobs=1, progress=lambda d, t: calls.append((d, t))),
        )
    )
    total = calls[0][1]
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_an_unreadable_page_of_ram_is_skipped_and_the_rest_still_searched():
    from test_corrupt import nic_pools, partial, run, world

    from netmem_probe.fake.faults import FaultyMemory
    from netmem_probe.fake.objects import PAGE_OFFSET

    w = world()
    page = nic_pools(w)[0].pages[0].netmem
    fm = FaultyMemory(w)
    before = run(fm, "holders", hex(page), "--json").json()[0]["holders"]
    assert before
    # A page of RAM none of the holders lies in, inside a memory segment.
    held = {int(h["address"], 16) >> 12 for h in before}
    hole = next(
        r.va + off
        for r in w.mem.regions
        if r.pa is not None and r.size > 1 << 20
        for off in range(1 << 20, r.size, 4096)
        if (r.va + off) >> 12 not in held
    )
    assert hole >= PAGE_OFFSET
    fm.unmap(hole, 4096)
    result = run(fm, "holders", hex(page), "--json")
    partial(result, f"RAM at {hole:#x}: unreadable page, not searched")
    assert result.json()[0]["holders"] == before


def test_a_search_of_given_ranges_finds_only_what_lies_in_them(fixture_program):
    prog = fixture_program("linux-7.3-mixed")
    values, spans = _targets(prog)
    problems = Problems()
    everywhere = list(search_words(prog, values, spans, problems, SearchOptions(jobs=1)))
    base = direct_map_base(prog, problems)
    assert base is not None
    # The physical pages of every other hit.
    pages = sorted({(a - base) >> 12 for a, _ in everywhere[::2]})
    ranges = [(pfn << 12, (pfn + 1) << 12) for pfn in pages]
    inside = list(search_words(prog, values, spans, problems, SearchOptions(jobs=1), ranges))
    assert len(everywhere) > 1 and not problems
    assert inside == [(a, v) for a, v in everywhere if (a - base) >> 12 in pages]
    assert len(inside) < len(everywhere)
