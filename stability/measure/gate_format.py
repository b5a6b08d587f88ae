"""The gate's verdict as text (a terminal or a CI log), JSON (scripts) or Markdown
(``$GITHUB_STEP_SUMMARY`` and pull-request comments).

The JSON schema, ``stability-gate/1``, is documented in ``docs/ci.md``::

    {"schema": "stability-gate/1", "exit_code": 0|1|2,
     "verdict": "pass"|"regression"|"cannot_judge", "baseline": str|null, "against": str|null,
     "counts": {"ok": n, "regression": n, "cannot_judge": n, "not_judged": n},
     "checks": [{"check", "item", "baseline", "current", "change", "tolerance",
                 "verdict": "ok"|"regression"|"cannot_judge"|"not_judged", "reason"}],
     "notes": [str]}
"""

import json

from stability.measure.gate import NOT_JUDGED, OK, Row, Verdict

SCHEMA = "stability-gate/1"
FORMATS = ("text", "json", "markdown")
MAX_ROWS = 25  # rows not ok shown in text and Markdown; the rest are counted
HEADS = ("check", "item", "baseline", "current", "change", "tolerance", "verdict")
SLUG = {
    "ok": "ok",
    "REGRESSION": "regression",
    "CANNOT JUDGE": "cannot_judge",
    "NOT JUDGED": "not_judged",
}


def _shown(verdict: Verdict) -> tuple[list[Row], int, int]:
    """Rows not ok first (capped), then ok rows other than per-cell figures; counts hidden."""
    bad = [r for r in verdict.rows if r.verdict != OK]
    ok_other = [r for r in verdict.rows if r.verdict == OK and "figures" not in r.check]
    same = sum(r.verdict == OK and "figures" in r.check for r in verdict.rows)
    return bad[:MAX_ROWS] + ok_other, max(0, len(bad) - MAX_ROWS), same


def _summary(verdict: Verdict) -> str:
    counts = {word: sum(r.verdict == word for r in verdict.rows) for word in SLUG}
    parts = ", ".join(f"{n} {word.lower()}" for word, n in counts.items() if n)
    return (
        f"gate: {verdict.word} (exit {verdict.code}; {len(verdict.rows)} checks: {parts or 'none'})"
    )


def text(verdict: Verdict) -> str:
    """An aligned table and the verdict line, for stdout."""
    rows, hidden, same = _shown(verdict)
    cells = [HEADS] + [tuple(getattr(r, h) for h in HEADS) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(cells) == 1:
        lines = []
    if hidden:
        lines.append(f"... and {hidden} more rows not ok")
    if same:
        lines.append(f"{same} stability figure lists equal within tolerance")
    lines.append(_summary(verdict))
    return "\n".join(lines)


def reasons(verdict: Verdict) -> list[str]:
    """Why each row is not ok, and the notes: lines for stderr."""
    out = [f"gate: {r.item}: {r.reason}" for r in verdict.rows if r.verdict != OK and r.reason]
    return out[:MAX_ROWS] + [n for n in verdict.notes if n not in out]


def as_json(verdict: Verdict) -> str:
    counts = {slug: 0 for slug in SLUG.values()}
    for r in verdict.rows:
        counts[SLUG[r.verdict]] += 1
    doc = {
        "schema": SCHEMA,
        "exit_code": verdict.code,
        "verdict": SLUG.get(verdict.word, verdict.word.lower()),
        "baseline": verdict.baseline,
        "against": verdict.against,
        "counts": counts,
        "checks": [{**r.as_dict(), "verdict": SLUG[r.verdict]} for r in verdict.rows],
        "notes": verdict.notes,
    }
    return json.dumps(doc, indent=1)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def markdown(verdict: Verdict) -> str:
    """A heading with the verdict, the rows not ok (and other checks), then the counts."""
    icon = {0: "✅", 1: "❌", 2: "⚠️"}[verdict.code]
    lines = [f"### {icon} stability gate: {verdict.word} (exit {verdict.code})", ""]
    rows, hidden, same = _shown(verdict)
    if rows:
        heads = (*HEADS, "reason")
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("|" + "---|" * len(heads))
        for r in rows:
            lines.append("| " + " | ".join(_md_cell(getattr(r, h)) for h in heads) + " |")
        lines.append("")
    if hidden:
        lines.append(f"… and {hidden} more rows not ok.")
    if same:
        lines.append(f"{same} stability figure lists equal within tolerance.")
    not_judged = sum(r.verdict == NOT_JUDGED for r in verdict.rows)
    if not_judged:
        lines.append(f"{not_judged} check(s) not judged on this machine (see the reason column).")
    lines += [f"- {n}" for n in verdict.notes]
    lines.append("")
    lines.append(f"`{_summary(verdict)}`")
    return "\n".join(lines)


def render(verdict: Verdict, fmt: str) -> str:
    return {"text": text, "json": as_json, "markdown": markdown}[fmt](verdict)
