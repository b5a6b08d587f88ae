"""1. Environment: where and with what the report was produced, and what the runner did."""

import pandas as pd

from stability.report.inputs import ReportData
from stability.report.sections.page import Section, Table

TITLE = "1. Environment"
INTRO = (
    "Where and with what this report was produced, and which dtypes ran natively or "
    "emulated (on CPU, float16/bfloat16 are computed in float32 and rounded at every "
    "layer boundary)."
)
MACHINE = "Machine and software"
PRECISION_MODES = "Which dtypes ran natively and which were emulated"
NO_PRECISION = "No sweep or benchmark results yet: no dtype has run."
STEPS = "What this report run did"
NO_RUN = "Rendered with --no-run: nothing was computed, the store was read."
OTHER_TORCH = (
    "The store holds runs made with torch {stored}; this page was rendered with torch {now}."
)


def environment(data: ReportData) -> Section:
    facts = {
        "generated (UTC)": data.generated,
        "commit": data.commit or "not a git checkout",
        **data.environment,
        "results store": str(data.db),
        "mode": "quick (--quick)" if data.quick else "full",
    }
    section = Section("environment", TITLE, INTRO)
    section.tables.append(
        Table(
            "environment",
            MACHINE,
            pd.DataFrame({"item": list(facts), "value": list(facts.values())}),
        )
    )
    modes = []
    if not data.sweep.empty and "precision_mode" in data.sweep.columns:
        cells = data.sweep.drop_duplicates("cell_key")
        sweep_modes = cells.groupby(["device", "dtype", "precision_mode"]).size()
        modes.append(sweep_modes.rename("sweep cells").reset_index())
    if not data.bench.empty and "precision_mode" in data.bench.columns:
        bench_modes = data.bench.groupby(["device", "dtype", "precision_mode"]).size()
        modes.append(bench_modes.rename("benchmark rows").reset_index())
    if modes:
        merged = modes[0]
        for other in modes[1:]:
            merged = merged.merge(other, how="outer", on=["device", "dtype", "precision_mode"])
        section.tables.append(Table("precision-modes", PRECISION_MODES, merged))
    else:
        section.notes.append(NO_PRECISION)
        section.status = "partial"
    if data.steps:
        steps = pd.DataFrame(
            [
                {
                    "step": s.name,
                    "status": s.status,
                    "detail": s.detail,
                    "seconds": round(s.seconds, 1),
                }
                for s in data.steps
            ]
        )
        section.tables.append(Table("runner-steps", STEPS, steps))
        failed = [s for s in data.steps if s.status == "failed"]
        if failed:
            section.judge("fail", "; ".join(f"{s.name} failed: {s.detail}" for s in failed))
        else:
            section.judge("pass", f"{len(data.steps)} runner steps ran or were reused")
    else:
        section.notes.append(NO_RUN)
        section.judge("pass", "rendered from the store (--no-run): nothing computed")
    torch_now = data.environment.get("torch version")
    if not data.runs.empty and torch_now is not None:
        versions = sorted(set(data.runs["torch_version"].astype(str)))
        if versions != [torch_now]:
            section.notes.append(OTHER_TORCH.format(stored=", ".join(versions), now=torch_now))
    return section
