"""The probe's verdict on tiny Hugging Face models, healthy and with planted faults.

    PYTHONPATH=$PWD python scripts/hf_verdicts.py [--out docs/hf-verdicts.md]

For each architecture in ``examples/hf_tiny.py``, at its default init, with
``initializer_range=1.0`` and with block 1's weights x1e3 (``scale_block=1``): the network's
verdict, where it starts (module, block, side), and the stream through each stack. Eval
mode, the fixed random projection as the loss (as ``stability probe`` without ``--loss``).
Prints a Markdown table; ``--out`` also writes it.
"""

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from stability.core.outputs import main_tensor
from stability.core.probe import projection_loss
from stability.usermodel.findings import judge, summary
from stability.usermodel.probe import probe_modules

VARIANTS: dict[str, dict[str, Any]] = {
    "default init": {},
    "initializer_range=1.0": {"initializer_range": 1.0},
    "block 1 weights x1e3": {"scale_block": 1},
}


def one(arch: str, over: dict[str, Any]) -> dict[str, Any]:
    from examples import hf_tiny

    model = hf_tiny.build(arch, **over).eval()
    batch = getattr(hf_tiny, f"{arch}_batch")()
    if arch not in ("t5", "whisper"):
        batch.pop("labels")
    rows = judge(probe_modules(model, lambda: main_tensor(model(**batch)), projection_loss))
    return summary(rows)


def cell(s: dict[str, Any]) -> str:
    origin = s.get("origin")
    if not origin:
        return f"**{s['verdict']}**"
    where = origin["block"] or origin["module"]
    return f"**{s['verdict']}**: {origin['side']}, {where} (`{origin['module']}`)"


def streams(s: dict[str, Any]) -> str:
    return "; ".join(
        f"{st['stack']}: 10^{st['fwd_log10']:+.2f} fwd, 10^{st['bwd_log10']:+.2f} bwd"
        for st in s.get("stacks", [])
    )


def main() -> int:
    from examples import hf_tiny

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    head = ["model", *VARIANTS, "stream at default init"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for arch in hf_tiny.ARCHS:
        found = {name: one(arch, over) for name, over in VARIANTS.items()}
        cells = [cell(found[name]) for name in VARIANTS]
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {streams(found['default init'])} |")
        print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
