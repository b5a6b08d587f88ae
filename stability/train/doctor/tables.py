"""A doctor run as tables: the one-row verdict and the per-layer last finite statistics.

``stability doctor`` and the report's default cases write the same tables, so they are
made in one place.
"""

import pandas as pd

from stability.train.doctor.diagnosis import Diagnosis


def diagnosis_tables(diag: Diagnosis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one-row verdict, per-layer last finite statistics with the config's fields)."""
    verdict = pd.DataFrame([diag.as_row()])
    layers = diag.last_finite.copy()
    for key, value in diag.config.as_dict().items():
        layers[key] = value
    return verdict, layers
