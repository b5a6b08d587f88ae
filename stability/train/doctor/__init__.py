"""The divergence doctor: where the first NaN or Inf of a training run comes from, and why.

Watching is cheap (``watch``): one forward hook per layer and a tensor hook on its output
reduce values and gradients to (max |x|, mean |x|), one host sync per step. The step is
checked before the optimizer touches the weights (``run``), so a failing step can be
replayed exactly, operator by operator (``replay``), to name the operator that made the
first inf or NaN and how. A ``Diagnosis`` (``diagnosis``) holds the verdict and reads as a
few lines; ``tables`` turns it into the tables the CLI and the report write; ``cost`` times
the doctor against ``detect_anomaly``; ``extras`` runs the optional studies of one config.

The names are re-exported here: ``from stability.train.doctor import diagnose`` works.
"""

from stability.train.doctor.cost import COST_REPEATS, CostComparison, compare_cost
from stability.train.doctor.diagnosis import (
    GROWTH_MIN_POINTS,
    GROWTH_MIN_RATIO,
    GROWTH_MIN_RISING,
    GROWTH_WINDOW,
    INF,
    NAN,
    Diagnosis,
    OpEvent,
    geometric_growth,
)
from stability.train.doctor.extras import Extras, extra_tables
from stability.train.doctor.replay import replay
from stability.train.doctor.run import Doctor, diagnose
from stability.train.doctor.tables import (
    OPTIONAL_TABLES,
    diagnosis_tables,
    doctor_csv_path,
    doctor_outputs,
    write_doctor_csvs,
    write_doctor_run,
)
from stability.train.doctor.watch import Watch

__all__ = [
    "COST_REPEATS",
    "GROWTH_MIN_POINTS",
    "GROWTH_MIN_RATIO",
    "GROWTH_MIN_RISING",
    "GROWTH_WINDOW",
    "INF",
    "NAN",
    "OPTIONAL_TABLES",
    "CostComparison",
    "Diagnosis",
    "Doctor",
    "Extras",
    "OpEvent",
    "Watch",
    "compare_cost",
    "diagnose",
    "diagnosis_tables",
    "doctor_csv_path",
    "doctor_outputs",
    "extra_tables",
    "geometric_growth",
    "replay",
    "write_doctor_csvs",
    "write_doctor_run",
]
