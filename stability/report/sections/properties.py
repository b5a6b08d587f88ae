"""6. Properties: every hypothesis property, its chapter, its result and its witness.

The results are the runner's junit XML (``ReportData.properties``), read as they are.
"""

from stability.report.inputs import ReportData
from stability.report.junit import property_table, read_junit
from stability.report.sections.page import Section, Table

TITLE = "6. Properties"
INTRO = (
    "Every hypothesis property of the suite with the chapter of the notes it checks, its "
    "result in the `ci` profile, the number of examples hypothesis ran, and the result of "
    "its witness (a known-bad variant on which the same check must fail; 'passed' means "
    "the check did catch it)."
)
NOT_RUN = (
    "The property suite has not run: no junit XML in the cache or in results/. Run "
    "`stability report` without --no-run, or `nox -s properties`."
)
OLDER = "This result is from older code than the checkout: re-run to refresh."
INCOMPLETE = "pytest exited {code}: the results below are incomplete."
NO_XML = "No junit XML at {path}."
NO_PROPERTIES = "The junit XML lists no property tests."
NO_EXAMPLES = (
    "Examples run: not available (the junit XML carries no hypothesis statistics; "
    "run pytest with --hypothesis-show-statistics)."
)
BY_CHAPTER = "By chapter"
EVERY = "Every property"
ORDER = ["passed", "failed", "error", "skipped", "missing"]


def properties(data: ReportData) -> Section:
    section = Section("properties", TITLE, INTRO)
    run = data.properties
    if run is None:
        section.status = "not run"
        section.notes.append(NOT_RUN)
        return section
    section.notes.append(f"Source: {run.source}.")
    if run.current is False:
        section.status = "partial"
        section.notes.append(OLDER)
    if run.exit_code not in (None, 0, 1, 5):
        section.status = "partial"
        section.failed = True
        section.notes.append(INCOMPLETE.format(code=run.exit_code))
    if not run.junit.exists():
        section.status = "not available"
        section.notes.append(NO_XML.format(path=run.junit))
        return section
    cases = [c for c in read_junit(run.junit) if c.file.startswith("properties/")]
    table = property_table(cases, data.root)
    if table.empty:
        section.status = "not available"
        section.notes.append(NO_PROPERTIES)
        return section
    results = table["result"].value_counts()
    witnesses = table["witness"].value_counts()
    counted = ", ".join(f"{results[r]} {r}" for r in ORDER if results.get(r, 0))
    witnessed = ", ".join(f"{witnesses[r]} {r}" for r in ORDER if witnesses.get(r, 0))
    section.verdict = f"{len(table)} properties: {counted}; witnesses: {witnessed}"
    section.notes.append(section.verdict + ".")
    broken = int(results.get("failed", 0) + results.get("error", 0))
    section.failed = section.failed or bool(broken)
    if section.failed:
        names = table[table["result"].isin(["failed", "error"])]["property"].astype(str)
        why = (
            f"{broken} of {len(table)} properties failed: {', '.join(names.head(3))}"
            if broken
            else f"pytest exited {run.exit_code}: incomplete run"
        )
        section.judge("fail", why)
    else:
        passed = int(results.get("passed", 0))
        unwitnessed = int(witnesses.get("missing", 0) + witnesses.get("failed", 0))
        parts = ["older code than the checkout"] if run.current is False else []
        parts += [f"{unwitnessed} without a working witness"] if unwitnessed else []
        parts += [f"{len(table) - passed} skipped or missing"] if passed < len(table) else []
        if parts:
            section.judge(
                "warn", f"{passed} of {len(table)} passed, none failed; " + ", ".join(parts)
            )
        else:
            section.judge("pass", f"all {len(table)} properties passed, each with its witness")
    if table["examples run"].isna().all():
        section.notes.append(NO_EXAMPLES)
    chapters = (
        table.groupby("chapter")
        .agg(
            properties=("property", "size"),
            passed=("result", lambda r: int((r == "passed").sum())),
            witnessed=("witness", lambda r: int((r == "passed").sum())),
        )
        .reset_index()
    )
    section.tables.append(Table("properties-by-chapter", BY_CHAPTER, chapters))
    section.tables.append(Table("properties", EVERY, table, max_rows=1000))
    return section
