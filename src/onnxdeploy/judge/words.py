"""The judge's vocabulary: one set of speed words for every report, and how a ratio becomes one.

``faster``, ``equal``, ``slower``, ``mixed`` (faster at one batch size, slower at another) and
``undecided`` (the spread is too wide to rank). A speedup is always float (or baseline) time over
the variant's time: above 1 is faster. Text says "2.1x faster", never a bare ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

FASTER, EQUAL, SLOWER, MIXED, UNDECIDED = "faster", "equal", "slower", "mixed", "undecided"
WORDS = (FASTER, EQUAL, SLOWER, MIXED, UNDECIDED)


def times(x: float) -> str:
    """A factor for text: 2 significant digits near 1, one decimal above."""
    return f"{x:.2f}x" if x < 1.1 else f"{x:.1f}x" if x < 10 else f"{x:.0f}x"


def call(speedup: float, margin: float) -> str:
    """One ratio judged against a margin: ``faster``, ``equal`` or ``slower``."""
    if speedup <= 0:
        return UNDECIDED
    if abs(math.log(speedup)) <= math.log1p(margin):
        return EQUAL
    return FASTER if speedup > 1 else SLOWER


def combine(calls: Iterable[str]) -> str:
    """The word for several calls (one per batch size): ``mixed`` when faster somewhere and slower elsewhere."""
    found = set(calls)
    if not found:
        return EQUAL
    if FASTER in found and SLOWER in found:
        return MIXED
    if SLOWER in found:  # slower somewhere is a finding, whatever the other sizes could not tell
        return SLOWER
    if UNDECIDED in found:
        return UNDECIDED
    return FASTER if FASTER in found else EQUAL


def ratio_words(speedup: float | None, word: str) -> str:
    """'2.1x faster', '5.2x slower', 'equal' for one ratio already judged as ``word``."""
    if speedup is None or speedup <= 0:
        return "not measured"
    if word == EQUAL:
        return "equal"
    return f"{times(speedup)} faster" if speedup >= 1 else f"{times(1 / speedup)} slower"


def speed_words(speedup: float | None, margin: float) -> str:
    """A speedup in words: "2.1x faster", "5.2x slower", "equal (within 6% noise)"."""
    if speedup is None or speedup <= 0:
        return "not measured"
    word = call(speedup, margin)
    if word == EQUAL:
        return f"equal (within {100 * margin:.0f}% noise)"
    return ratio_words(speedup, word)
