"""The one place that decides: speed words, auto's choice, optimize's recommendation, the shipping rule.

``words`` (the vocabulary), ``inprocess`` (a variant against float from one interleaved
measurement), ``http`` (two served targets from repeated runs), ``choose`` (auto's choice among
int8 candidates), ``recommend`` (optimize's), ``ship`` (the verdict of bench and the pipeline).
It imports only ``measure`` below it; every step and the pipeline call it, nothing here measures.
"""

from .choose import Choice, choose, ship_admissible
from .http import Speed, compare
from .ship import SIMPLICITY, Contender, Decision, decide
from .words import EQUAL, FASTER, MIXED, SLOWER, UNDECIDED, WORDS, speed_words, times

__all__ = ["EQUAL", "FASTER", "MIXED", "SIMPLICITY", "SLOWER", "UNDECIDED", "WORDS", "Choice", "Contender",
           "Decision", "Speed", "choose", "compare", "decide", "ship_admissible", "speed_words", "times"]
