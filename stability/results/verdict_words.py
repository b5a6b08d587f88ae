"""The words a config's verdict can be, and the band that decides between them.

``results/tables.py`` assigns them from pandas tables; the commands that accept them
(``sweep --fail-on``, its help) and the model verdicts need only the words and the band,
and a quiet sweep does not load pandas for them (issue 27).
"""

VERDICTS = ("stable", "explodes", "vanishes", "non-finite")  # every word ``verdict`` returns
BAND = 2.0  # |log10 growth| beyond this many decades: explodes or vanishes
