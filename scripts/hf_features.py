"""Every user-model feature on every tiny Hugging Face architecture, as a user runs them.

    PYTHONPATH=$PWD python scripts/hf_features.py [--archs gpt2,llama] [--out FILE.md]

Per architecture (``examples/hf_tiny.py``, eval mode, the HF batch of keyword arguments):

- probe: ``stability probe`` (exit code, verdict);
- doctor: ``stability doctor --optimizer adamw --steps 5`` (exit code, status, objective);
- gate: ``stability baseline`` then ``stability gate`` on the same flags (exit codes, PASS);
- watch: ``stability.watch(model, every=1)`` around 3 AdamW steps of the model's own loss
  (modules recorded, all finite);
- plugin: ``stability.testing``'s three assertions, as the pytest plugin's
  ``stability_check`` runs them (each passes).

Prints a Markdown table; ``--out`` also writes it.
"""

import argparse
import contextlib
import io
import json
import logging
import math
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch


def _cli(*args: str) -> tuple[int, str]:
    from stability.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(args))
    return code, out.getvalue()


def _flags(arch: str) -> list[str]:
    return ["--model", "examples.hf_tiny:build", "--model-args", json.dumps({"arch": arch}),
            "--input", f"examples.hf_tiny:{arch}_batch"]  # fmt: skip


def features(arch: str, tmp: Path) -> dict[str, str]:
    import stability
    from examples import hf_tiny
    from stability.testing import (
        assert_gradients_finite,
        assert_no_overflow,
        assert_variance_preserved,
    )

    row: dict[str, str] = {}
    db = ["--db", str(tmp / "s.db")]
    code, out = _cli("probe", *_flags(arch), *db, "--out", str(tmp / f"{arch}.csv"), "--json")
    row["probe"] = (
        f"exit {code}: {json.loads(out)['summary']['verdict']}" if code == 0 else f"exit {code}"
    )
    code, out = _cli("doctor", *_flags(arch), *db, "--optimizer", "adamw", "--lr", "1e-3",
                     "--steps", "5", "--out", str(tmp / f"{arch}-doctor.csv"))  # fmt: skip
    status = next((w for w in ("stable", "diverged") if f"\n{w}" in "\n" + out), "?")
    row["doctor"] = f"exit {code}: {status}"
    base = str(tmp / f"{arch}-baseline.json")
    code_b, _ = _cli("baseline", *_flags(arch), "--reason", "features", "--out", base)
    code_g, out = _cli("gate", *_flags(arch), "--baseline", base)
    row["gate"] = f"exit {code_b}/{code_g}: {'PASS' if 'PASS' in out else '?'}"

    model = hf_tiny.build(arch).eval()
    batch = getattr(hf_tiny, f"{arch}_batch")()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with stability.watch(model, every=1) as w:
        for _ in range(3):
            opt.zero_grad()
            model(**batch).loss.backward()
            opt.step()
    frame = w.to_frame(wide=True)
    # NaN grad_var: the module's output gets no gradient (rotary, a frozen table): no value.
    forward = frame[["act_var", "act_max_abs"]].map(math.isfinite).all().all()
    grads = frame["grad_var"]
    finite = bool(forward) and not bool(grads.map(math.isinf).any())
    silent = sorted(set(frame.loc[grads.isna(), "module"]))
    row["watch"] = (
        f"{frame['module'].nunique()} modules x {frame['step'].nunique()} steps, finite: "
        f"{finite}" + (f" (no gradient: {', '.join(silent)})" if silent else "")
    )

    plain = hf_tiny.build(arch).eval()
    batch.pop("labels", None) if arch not in ("t5", "whisper") else None
    passed = []
    for check in (assert_variance_preserved, assert_gradients_finite, assert_no_overflow):
        try:
            check(plain, batch)
            passed.append("pass")
        except AssertionError as exc:
            passed.append(f"FAIL ({str(exc)[:60]})")
    row["plugin"] = ", ".join(passed)
    return row


def main() -> int:
    from examples import hf_tiny

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(hf_tiny.ARCHS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    head = ["model", "probe", "doctor", "baseline/gate", "watch", "plugin (3 assertions)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            found: dict[str, Any] = features(arch, Path(tmp))
            lines.append(f"| {arch} | " + " | ".join(found.values()) + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
