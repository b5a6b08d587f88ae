#!/usr/bin/env python
"""Proof that the gate neither cries wolf nor sleeps; rerun it on any machine.

    python scripts/prove_gate.py            # 10 runs per experiment (~15 min on 2 busy cores)
    python scripts/prove_gate.py --runs 3   # a quicker look

Experiments (every one a fresh ``stability gate`` process, as CI would run it):

- A/A against a baseline written at the start, and against a copy whose environment names
  another CPU (figures judged, throughput NOT JUDGED): 0 alarms wanted;
- A/A ``--against HEAD --candidate HEAD`` (two worktrees of the same commit): 0 alarms wanted;
- planted slowdowns of 25 % and 15 % (``STABILITY_PLANT_SLOWDOWN``, which adds GEMMs taking
  that share of the step's time; it reaches only the candidate side of ``--against``);
- a planted numerical change, Kaiming's variance halved (the registry entry is replaced in
  the gate's process before it runs), against the foreign baseline: must exit 1;
- the same change in a candidate worktree only, judged by ``--against HEAD``: must exit 1;
- a shallow clone with ``--against auto``: exit 0 and one skip line;
- the CI step's wall time; missing, corrupt, partial and one-sample baselines: must exit 2.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
# Kaiming's std scaled by sqrt(1/2) when the package is imported (appended to a copy's
# ``__init__``), or, run with ``-c``, before the CLI starts in this process.
HALVE_KAIMING_ON_IMPORT = """
import dataclasses as _dc, math as _math
from stability.core.inits import INITS as _INITS
_k = _INITS["kaiming_normal"]
def _halved(weight, gen):
    _k.apply(weight, gen)
    weight.data.mul_(_math.sqrt(0.5))
_INITS["kaiming_normal"] = _dc.replace(_k, apply=_halved)
"""
HALVE_KAIMING = (
    HALVE_KAIMING_ON_IMPORT
    + """
import sys
from stability.cli import main
sys.exit(main(sys.argv[1:]))
"""
)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def gate(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, float]:
    """One ``stability gate`` process; with ``cwd``, that tree's own code."""
    start = time.perf_counter()
    extra = {"PYTHONPATH": str(cwd)} if cwd else {}
    proc = subprocess.run(
        [PY, "-m", "stability.cli", "gate", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), **extra},
        cwd=cwd,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def first_bad_row(out: str) -> str:
    bad = [line for line in out.splitlines() if "REGRESSION" in line and "gate:" not in line]
    return " ".join(bad[0].split()) if bad else "no regression row"


def ratio(out: str) -> str:
    m = re.search(r"x(\d+\.\d+) \(p=([^)]+)\)", out)
    return f"x{m.group(1)} p={m.group(2)}" if m else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    n = args.runs
    tmp = Path(tempfile.mkdtemp(prefix="prove-gate-"))
    base = tmp / "baseline.json"
    t0 = time.perf_counter()
    subprocess.run(
        [PY, "-m", "stability.cli", "baseline", "--out", str(base), "--reason", "prove_gate"],
        check=True,
    )
    summary: list[str] = []

    def experiment(name: str, gate_args: list[str], want: int, env: dict[str, str] | None = None,
                   runs: int = n) -> None:  # fmt: skip
        codes, times, ratios = [], [], []
        for i in range(runs):
            code, out, wall = gate(gate_args, env)
            codes.append(code)
            times.append(wall)
            ratios.append(ratio(out))
            print(f"{name} #{i + 1}: exit {code} in {wall:.1f}s {ratios[-1]}", flush=True)
            if code not in (0, 1):
                print(out, flush=True)
        hits = sum(c == want for c in codes)
        summary.append(
            f"{name:38} {hits:>2}/{runs} exit {want}  codes {codes}  "
            f"median wall {sorted(times)[len(times) // 2]:.1f}s  ratios {ratios}"
        )

    # One commit for both sides, resolved once: HEAD may move while this runs.
    rev = git("rev-parse", "HEAD")
    against = ["--no-baseline", "--against", rev, "--candidate", rev]
    foreign = tmp / "foreign.json"
    doc = json.loads(base.read_text())
    doc["environment"] = {**doc["environment"], "cpu_model": "Another CPU 9000", "cpu_count": 64}
    foreign.write_text(json.dumps(doc))

    experiment("A/A vs foreign-CPU baseline", ["--baseline", str(foreign)], 0)
    experiment("A/A vs own baseline", ["--baseline", str(base)], 0)
    experiment("A/A --against HEAD", against, 0)
    experiment("planted 25% slowdown --against", against, 1, {"STABILITY_PLANT_SLOWDOWN": "0.25"})
    experiment("planted 15% slowdown --against", against, 1, {"STABILITY_PLANT_SLOWDOWN": "0.15"})
    experiment(
        "planted 25% slowdown vs own baseline", ["--baseline", str(base)], 1,
        {"STABILITY_PLANT_SLOWDOWN": "0.25"}, runs=max(1, n // 3),
    )  # fmt: skip
    experiment(
        "planted 25% slowdown vs foreign baseline", ["--baseline", str(foreign)], 0,
        {"STABILITY_PLANT_SLOWDOWN": "0.25"}, runs=1,
    )  # fmt: skip

    start = time.perf_counter()
    proc = subprocess.run(
        [PY, "-c", HALVE_KAIMING, "gate", "--baseline", str(foreign), "--no-throughput"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    summary.append(
        f"{'Kaiming halved, foreign baseline':38} exit {proc.returncode} (want 1) "
        f"in {time.perf_counter() - start:.1f}s; {first_bad_row(proc.stdout)}"
    )

    # A figure changed in the candidate tree only: a worktree of HEAD with Kaiming halved.
    tree = tmp / "candidate"
    git("worktree", "add", "--detach", str(tree), rev)
    try:
        with (tree / "stability" / "__init__.py").open("a") as f:
            f.write(HALVE_KAIMING_ON_IMPORT)
        start = time.perf_counter()
        code, out, _ = gate(["--no-baseline", "--against", rev], cwd=tree)
        summary.append(
            f"{'figure changed in candidate, --against':38} exit {code} (want 1) "
            f"in {time.perf_counter() - start:.1f}s; {first_bad_row(out)}"
        )
    finally:
        git("worktree", "remove", "--force", str(tree))

    # A shallow clone: no parent, so --against auto says so in one line and judges figures.
    shallow = tmp / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{Path.cwd()}", str(shallow)],
                   check=True)  # fmt: skip
    code, out, wall = gate(["--baseline", str(foreign), "--against", "auto"], cwd=shallow)
    skip = [line for line in out.splitlines() if "skipped" in line]
    summary.append(f"{'shallow clone --against auto':38} exit {code} (want 0) in {wall:.1f}s; "
                   f"{len(skip)} skip line: {skip[0] if skip else '-'}")  # fmt: skip

    # The CI step as nox runs it: committed baseline plus --against the first parent.
    code, out, wall = gate(["--against", "auto"])
    summary.append(f"{'CI gate step (--against auto)':38} exit {code} in {wall:.1f}s")

    spoiled = tmp / "spoiled.json"
    cases = {
        "missing baseline": None,
        "corrupt baseline": "{not json",
        "incompatible (version 99)": json.dumps({**doc, "version": 99}),
        "empty grid": json.dumps({**doc, "stability": {}}),
        "one efficiency sample": json.dumps(
            {**doc, "throughput": {**doc["throughput"], "efficiency": [0.5]}}
        ),
    }
    for name, text in cases.items():
        if text is None:
            spoiled.unlink(missing_ok=True)
        else:
            spoiled.write_text(text)
        code, out, _ = gate(["--baseline", str(spoiled)])
        message = [line for line in out.splitlines() if "cannot judge:" in line][:1]
        summary.append(f"{name:38} exit {code} (want 2): {message[0] if message else out[-200:]}")
    proc = subprocess.run(
        [PY, "-m", "pytest", "-q", "tests/test_gate.py", "-k", "hostile or unreadable"],
        capture_output=True,
        text=True,
        check=False,
    )
    summary.append(f"{'hostile-baseline table (tests)':38} {proc.stdout.strip().splitlines()[-1]}")

    print("\n== prove_gate summary ==")
    print("\n".join(summary))
    print(f"total wall time {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
