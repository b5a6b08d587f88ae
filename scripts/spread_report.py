"""figure_spread's arithmetic and tables: relative differences, the recommended rtol, the
smallest planted gain change it still catches, and the text report of a run's JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DTYPES = ("float64", "float32")


def rel_diff(now: float, base: float) -> float:
    """``|now - base| / |base|``; 0 for equal non-finite values, inf for any other mismatch."""
    if math.isnan(now) or math.isnan(base):
        return 0.0 if math.isnan(now) and math.isnan(base) else math.inf
    if math.isinf(now) or math.isinf(base) or base == 0.0:
        return 0.0 if now == base else math.inf
    return abs(now - base) / abs(base)


def compare(
    now: dict[str, Any], base: dict[str, Any], figures: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per dtype: max relative difference overall, per layer index and per figure, and where."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(base.keys() & now.keys()):
        dtype = str(base[name].get("dtype"))
        d = out.setdefault(
            dtype,
            {
                "max": 0.0,
                "where": None,
                "per_layer": [],
                "per_figure": {},
                "values": 0,
                "differ": 0,
            },
        )
        for fig in figures:
            for layer, (b, n) in enumerate(zip(base[name][fig], now[name][fig], strict=True)):
                r = rel_diff(float(n), float(b))
                d["values"] += 1
                d["differ"] += r != 0.0
                while len(d["per_layer"]) <= layer:
                    d["per_layer"].append(0.0)
                d["per_layer"][layer] = max(d["per_layer"][layer], r)
                d["per_figure"][fig] = max(d["per_figure"].get(fig, 0.0), r)
                if r > d["max"]:
                    d["max"], d["where"] = r, f"{name} {fig} layer {layer + 1}"
    missing = sorted(base.keys() ^ now.keys())
    if missing:
        raise RuntimeError(f"cells present on one side only: {missing}")
    return out


def recommend(spread: float, margin: float, dtype: str, rounding: str = "nearest") -> float:
    """``spread * margin`` as a power of ten: the nearest one (in log scale) or the next up.

    A spread of 0 counts as one unit roundoff of ``dtype``. "nearest" keeps the effective
    margin (rtol / spread) within a factor sqrt(10) of ``margin``; "up" makes it at least
    ``margin`` and at most ten times that.
    """
    eps = {"float64": 2.0**-53, "float32": 2.0**-24}[dtype]
    exponent = math.log10(max(spread, eps) * margin)
    rounded = math.ceil(exponent - 1e-12) if rounding == "up" else math.floor(exponent + 0.5)
    return float(10.0**rounded)


def gain_caught_at(rtol: float, layer: int = 1) -> float:
    """Smallest gain delta whose preact_var change at ``layer`` ((1+d)^(2*layer)-1) exceeds rtol.

    Exact for every init at layer 1 (bias 0, fixed input); at deeper layers only for
    homogeneous activations (relu).
    """
    return float((1.0 + rtol) ** (1.0 / (2 * layer)) - 1.0)


def fmt(x: float) -> str:
    return "0" if x == 0.0 else f"{x:.2e}"


def table(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    head = "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    return "\n".join([head, "  ".join("-" * w for w in widths), *lines])


def report(doc: dict[str, Any]) -> str:
    """The human-readable tables of a result document."""
    out: list[str] = []
    m = doc["machine"]
    b = doc["baseline"]["environment"]
    out.append(f"this machine: {m['cpu_model']} ({m['cpu_count']} cpus, avx512={m['avx512']})")
    out.append(f"baseline:     {b.get('cpu_model', '?')} (torch {b.get('torch', '?')})")
    out.append("max |a-b|/|b| over 12 cells x 3 figures x all layers, per dtype\n")
    rows = []
    for r in doc["variants"]:
        i = r["info"]
        rows.append(
            [
                r["variant"],
                i["cpu_capability"],
                i["mkl"]["cnr"],
                f"{i['threads']}/{i['mkl'].get('threads', '?')}",
                fmt(r["vs_reference"]["float64"]["max"]),
                fmt(r["vs_reference"]["float32"]["max"]),
                fmt(r["vs_baseline"]["float64"]["max"]),
                fmt(r["vs_baseline"]["float32"]["max"]),
            ]
        )
    heads = [
        "variant",
        "aten",
        "mkl cnr",
        "thr torch/mkl",
        "f64 vs ref",
        "f32 vs ref",
        "f64 vs base",
        "f32 vs base",
    ]
    out.append(table(heads, rows))
    out.append(
        "\nper layer index, max over variants and cells and figures: all variants against this"
        "\nmachine's reference (ref) and the baseline (base); 'same aten' = only the variants"
        "\nthat keep ATen's CPU capability (BLAS, CNR, threads), against both"
    )
    pl = doc["per_layer_max"]
    n = len(pl["vs_reference"]["float64"])
    keys = ("vs_reference", "vs_baseline", "same_aten")
    rows = [[str(i + 1)] + [fmt(pl[k][dt][i]) for k in keys for dt in DTYPES] for i in range(n)]
    heads = ["layer"] + [f"{dt[-2:]} {k}" for k in ("ref", "base", "same aten") for dt in DTYPES]
    out.append(table(heads, rows))
    out.append(f"\nskipped: {'; '.join(doc['skipped']) or 'none'}")
    out.append(f"mkl says: {doc['variants'][0]['info']['mkl']['header']}")
    how = "the nearest" if doc["rounding"] == "nearest" else "the next"
    out.append(f"\nrecommended rtol = max spread x {doc['margin']:g}, to {how} power of ten")
    for dt in DTYPES:
        caught = [p for p in doc["plants"] if p["plant"].startswith("gain=") and p[dt]["caught"]]
        smallest = min((float(p["plant"].split("=")[1]) for p in caught), default=math.nan)
        out.append(
            f"  {dt}: spread {fmt(doc['spread'][dt])}"
            f" (same aten {fmt(doc['spread_same_aten'][dt])})"
            f" -> rtol {doc['recommended_rtol'][dt]:.0e} (effective margin "
            f"{doc['effective_margin'][dt] or math.inf:.0f}); a gain 1+delta is caught at layer 1"
            f" from delta = {doc['gain_delta_caught_at_layer1'][dt]:.2e}, somewhere in the grid"
            f" from the planted delta = {smallest:g}"
        )
    out.append(
        "\nplanted changes against the same process unplanted, over the cells they change:"
        "\nL1 = smallest change of a layer-1 preact_var, max = largest change of any value,"
        "\ncaught = max > recommended rtol"
    )
    rows = []
    for p in doc["plants"]:
        row = [p["plant"]]
        for dt in DTYPES:
            c = p[dt]
            row += [
                str(c["cells_changed"]),
                fmt(c["layer1_preact_min"]),
                fmt(c["max"]),
                "yes" if c["caught"] else "NO",
            ]
        rows.append(row)
    heads = ["plant"] + [
        f"{dt[-2:]} {h}" for dt in DTYPES for h in ("cells", "L1", "max", "caught")
    ]
    out.append(table(heads, rows))
    return "\n".join(out)
