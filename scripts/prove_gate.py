#!/usr/bin/env python
"""Proof that the gate neither cries wolf nor sleeps; rerun it on any machine.

    python scripts/prove_gate.py            # 10 runs per experiment (~15 min on 2 busy cores)
    python scripts/prove_gate.py --runs 3   # a quicker look

Experiments (every one a fresh ``stability gate`` process, as CI would run it):

- A/A against a baseline written at the start (stability figures + efficiency): 0 alarms wanted;
- A/A ``--against HEAD --candidate HEAD`` (two worktrees of the same commit): 0 alarms wanted;
- planted slowdowns of 25 % and 10 % (``STABILITY_PLANT_SLOWDOWN``, which adds GEMMs taking
  that share of the step's time; it reaches only the candidate side of ``--against``);
- a planted numerical change, Kaiming's variance halved (the registry entry is replaced in
  the gate's process before it runs): must exit 1;
- missing, corrupt and incompatible baselines: must exit 2.
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
HALVE_KAIMING = """
import dataclasses, math, sys
from stability.inits import INITS
from stability.cli import main
k = INITS["kaiming_normal"]
def halved(weight, gen):
    k.apply(weight, gen)
    weight.data.mul_(math.sqrt(0.5))
INITS["kaiming_normal"] = dataclasses.replace(k, apply=halved)
sys.exit(main(sys.argv[1:]))
"""


def gate(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [PY, "-m", "stability.cli", "gate", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


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
    rev = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    against = ["--against", rev, "--candidate", rev]
    experiment("A/A vs baseline (false alarms = not 0)", ["--baseline", str(base)], 0)
    experiment("A/A --against HEAD", against, 0)
    experiment("planted 25% slowdown --against", against, 1, {"STABILITY_PLANT_SLOWDOWN": "0.25"})
    experiment("planted 10% slowdown --against", against, 1, {"STABILITY_PLANT_SLOWDOWN": "0.10"})
    experiment(
        "planted 25% slowdown vs baseline", ["--baseline", str(base)], 1,
        {"STABILITY_PLANT_SLOWDOWN": "0.25"}, runs=max(1, n // 3),
    )  # fmt: skip

    start = time.perf_counter()
    proc = subprocess.run(
        [PY, "-c", HALVE_KAIMING, "gate", "--baseline", str(base), "--no-throughput"],
        capture_output=True,
        text=True,
        check=False,
    )
    print(proc.stdout[-3000:])
    summary.append(
        f"{'Kaiming variance halved':38} exit {proc.returncode} (want 1) "
        f"in {time.perf_counter() - start:.1f}s"
    )

    spoiled = tmp / "spoiled.json"
    doc = json.loads(base.read_text())
    cases = {
        "missing baseline": None,
        "corrupt baseline": "{not json",
        "incompatible (version 99)": json.dumps({**doc, "version": 99}),
        "other environment": json.dumps(
            {**doc, "environment": {**doc["environment"], "torch": "0.0.0"}}
        ),
    }
    for name, text in cases.items():
        if text is None:
            spoiled.unlink(missing_ok=True)
        else:
            spoiled.write_text(text)
        code, out, _ = gate(["--baseline", str(spoiled)])
        message = [line for line in out.splitlines() if "cannot judge" in line][:1]
        summary.append(f"{name:38} exit {code} (want 2): {message[0] if message else out[-200:]}")

    print("\n== prove_gate summary ==")
    print("\n".join(summary))
    print(f"total wall time {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
