"""The HTML report's page: rendered from a tiny store with --no-run, self-contained, escaped.

The tiny store holds a 2x2 activation/init sweep at depth 4 in three dtypes, a fake
benchmark run and a fake junit XML; strings with ``<script>`` ride along in a benchmark
name, a run command and a property's failure message, and must come out escaped.
"""

import base64
import contextlib
import io
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report_spectrum import tiny_tables

from stability.cli import main
from stability.core.config import MLPConfig
from stability.report import doctor_cases, spectrum_cases
from stability.results.store import Store
from stability.sweep.run import SweepGrid, run_sweep
from stability.train.trainer import TrainConfig

EVIL = "<script>alert('x')</script>"
TINY_GRID = SweepGrid(
    activations=("relu", "tanh"),
    inits=("kaiming_normal", "standard_normal"),
    depths=(4,),
    widths=(16,),
    dtypes=("float32", "float16", "bfloat16"),
    seeds=(0, 1),
    batches=(8,),
)
PROPERTY_FILE = '''"""Chapter: a fake chapter for the report test."""

CHAPTER = "Fake chapter"
'''


def _stats(nodeid: str, passing: int) -> str:
    text = (
        f"{nodeid}:\n\n  - during generate phase (0.1 seconds):\n"
        f"    - {passing} passing, 0 failing, and 0 invalid test cases\n"
    )
    value = base64.b64encode(text.encode()).decode()
    return f'<property name="hypothesis-statistics-{nodeid}" value="{value}" />'


JUNIT = f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="6">
<properties>
{_stats("properties/test_fake.py::test_holds[float16]", 30)}
{_stats("properties/test_fake.py::test_holds[bfloat16]", 30)}
</properties>
<testcase classname="properties.test_fake" name="test_holds[float16]" time="0.5" />
<testcase classname="properties.test_fake" name="test_holds[bfloat16]" time="0.5" />
<testcase classname="properties.test_fake" name="test_witness_holds" time="0.1" />
<testcase classname="properties.test_fake" name="test_breaks" time="0.2">
  <failure message="assert {EVIL.replace("<", "&lt;").replace(">", "&gt;")}">trace</failure>
</testcase>
<testcase classname="properties.test_fake" name="test_unwitnessed" time="0.1" />
<testcase classname="tests.test_other" name="test_not_a_property" time="0.1" />
</testsuite></testsuites>
"""


def _tiny_train(lr: float, steps: int = 5) -> TrainConfig:
    return TrainConfig(MLPConfig(depth=3, width=8), lr=lr, steps=steps, batch=8, samples=8)


# The doctor's three kinds of run at toy size (the NaN case is the default one: it fails at
# step 0) and a two-rate map: ~1 s.
TINY_CASES = (
    doctor_cases.Case("stable", "trains", _tiny_train(0.01)),
    doctor_cases.Case("overflow", "lr too large", _tiny_train(1e6)),
    doctor_cases.DEFAULT_CASES[2],
)


def _bench_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for probe_every in (None, 1):
        for batch in (8, 32, 128):
            median = 1e-3 * (1 + batch / 64) * (1.3 if probe_every else 1.0)
            rows.append(
                {
                    "name": f"test_train_step[{batch}]" if probe_every is None else EVIL,
                    "stats_median": median * 10,
                    "stats_q1": median * 9.5,
                    "stats_q3": median * 10.8,
                    "kind": "train",
                    "depth": 4,
                    "width": 16,
                    "batch_size": batch,
                    "device": "cpu",
                    "dtype": "float32",
                    "precision_mode": "native",
                    "threads": 1,
                    "torch_version": "test",
                    "probe_every": probe_every,
                    "flops_per_step": 6 * batch * 16 * 16 * 4,
                    "samples_per_s": batch / median,
                    "gflops": 1.0,
                    "calib_gflops": 2.0,
                    "efficiency": 0.5 - 0.1 * (probe_every or 0),
                    "median_s": median,
                    "iqr_s": 0.1 * median,
                }
            )
    return rows


@dataclass(frozen=True)
class TinyReport:
    root: Path
    out: Path
    db: Path
    code: int
    stdout: str
    html: str


def build_tiny_report(root: Path) -> TinyReport:
    """A tiny store, fake junit and bench rows under ``root``; render with --no-run."""
    db = root / "results" / "stability.db"
    with Store.open(db) as store:
        run_sweep(TINY_GRID, store, ["stability", "sweep", EVIL])
        run_id = store.start_run("bench", ["pytest", "benchmarks", EVIL])
        store.write_bench(run_id, _bench_rows())
        doctor = doctor_cases.compute(
            TINY_CASES, _tiny_train(0.01, steps=4), lrs=(0.01, 1000.0),
            inits=("kaiming_normal",), activations=("relu", "tanh"),
        )  # fmt: skip
        doctor_cases.write(store, doctor, ["stability", "report", EVIL])
        spectrum_cases.write(store, tiny_tables())
    (root / "properties").mkdir(parents=True, exist_ok=True)
    (root / "properties" / "test_fake.py").write_text(PROPERTY_FILE)
    (root / "results" / "properties-junit.xml").write_text(JUNIT)
    out = root / "reports" / "index.html"
    buf = io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(buf):
        code = main(["report", "--no-run", "--db", str(db), "--out", str(out)])
    return TinyReport(root, out, db, code, buf.getvalue(), out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyReport:
    return build_tiny_report(tmp_path_factory.mktemp("report"))


class _Collector(HTMLParser):
    """Every start tag with its attributes, for checks on src/href/alt."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Collector()
    parser.feed(page)
    return parser.tags


def test_cli_prints_path_and_verdict(tiny: TinyReport) -> None:
    assert f"report: {tiny.out}" in tiny.stdout
    assert "verdict:" in tiny.stdout
    # test_breaks failed in the fake junit: the report says so and the exit code carries it.
    assert "3 properties: 2 passed, 1 failed; witnesses: 1 passed, 2 missing" in tiny.stdout
    assert tiny.code == 1


def test_every_section_renders(tiny: TinyReport) -> None:
    for title in (
        "1. Environment",
        "2. Stability atlas",
        "3. Heat map",
        "4. Precision headroom",
        "5. The notes",
        "6. Properties",
        "7. Throughput",
        "8. Gate",
        "9. Divergence doctor",
        "10. History",
    ):
        assert title in tiny.html, title
    assert "could not be drawn" not in tiny.html
    assert "error:" not in tiny.stdout


def test_self_contained(tiny: TinyReport) -> None:
    tags = _tags(tiny.html)
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    images = [a for t, a in tags if t == "img"]
    assert len(images) >= 12  # atlas x2, heat map, precision, 5 notes, throughput, lr map, history
    for attrs in images:
        src = attrs.get("src") or ""
        assert src.startswith(("data:image/svg+xml;base64,", "data:image/png;base64,")), src[:60]
        payload = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert payload.startswith((b"<?xml", b"<svg", b"\x89PNG"))
        assert (attrs.get("alt") or "").strip(), "every image needs alt text"
    for _, attrs in tags:
        for key in ("src", "href"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), value
    assert "http://" not in tiny.html.replace("http://www.w3.org", "")
    assert "https://" not in tiny.html


def test_csv_beside_the_page_for_every_table(tiny: TinyReport) -> None:
    links = [a["href"] for t, a in _tags(tiny.html) if t == "a" and a.get("class") == "csv"]
    assert len(links) >= 10
    for href in links:
        assert href is not None and (tiny.out.parent / href).is_file(), href


def test_text_from_data_is_escaped(tiny: TinyReport) -> None:
    assert EVIL not in tiny.html
    assert "&lt;script&gt;" in tiny.html  # the bench name, the run command, the failure message
    assert "<script" not in tiny.html


def test_properties_paired_with_witnesses(tiny: TinyReport) -> None:
    table = (tiny.out.parent / "properties.csv").read_text()
    lines = {line.split(",")[2]: line for line in table.splitlines()[1:]}
    assert set(lines) == {"test_holds", "test_breaks", "test_unwitnessed"}
    assert lines["test_holds"].startswith("Fake chapter,properties/test_fake.py")
    assert ",passed,2,60,passed," in lines["test_holds"]  # 2 cases, 30 + 30 examples
    assert ",failed," in lines["test_breaks"]
    assert ",missing," in lines["test_unwitnessed"]


def test_throughput_and_probe_overhead(tiny: TinyReport) -> None:
    overhead = (tiny.out.parent / "probe-overhead.csv").read_text().splitlines()
    assert len(overhead) == 4  # header + three batch sizes
    slowdowns = [float(line.rsplit(",", 1)[1]) for line in overhead[1:]]
    assert slowdowns == pytest.approx([1.3] * 3)


def test_gate_without_baseline_says_how_to_make_one(tiny: TinyReport) -> None:
    assert "Gate: CANNOT JUDGE (exit 2): no baseline" in tiny.stdout
    assert "No baseline at" in tiny.html
    assert "stability baseline --reason" in tiny.html


def test_doctor_section_shows_map_and_three_diagnoses(tiny: TinyReport) -> None:
    assert "Divergence doctor: lr map: 2 of 2 configs train at some lr; 3 runs diagnosed: " \
        "2 diverged, 1 stable" in tiny.stdout  # fmt: skip
    card = (tiny.out.parent / "doctor.csv").read_text().splitlines()
    assert card[0] == "finding,stable,overflow,not-a-number"
    assert "kind,—,infinite,not-a-number" in card or "kind,—,not-a-number,not-a-number" in card
    lr_map = (tiny.out.parent / "lr-map.csv").read_text().splitlines()
    assert lr_map[0] == "activation,init,lr 0.01,lr 1e+03,largest stable lr tried"
    assert lr_map[1:] == ["relu,kaiming_normal,ok,DIV,0.01", "tanh,kaiming_normal,ok,DIV,0.01"]
    assert any("Stable or divergent training" in (a.get("alt") or "") for _, a in _tags(tiny.html))
    layers = (tiny.out.parent / "doctor-layers.csv").read_text()
    assert "stable" not in layers and "overflow" in layers  # only the runs that diverged


def test_rerender_reuses_figures(tiny: TinyReport) -> None:
    cache = tiny.db.parent / "report-cache" / "figures"
    before = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("atlas-forward-") for name in before)
    again = tiny.root / "reports" / "again.html"
    with contextlib.chdir(tiny.root), contextlib.redirect_stdout(io.StringIO()):
        main(["report", "--no-run", "--db", str(tiny.db), "--out", str(again)])
    assert sorted(p.name for p in cache.iterdir()) == before
    first = [a["src"] for t, a in _tags(tiny.html) if t == "img"]
    second = [a["src"] for t, a in _tags(again.read_text()) if t == "img"]
    assert first == second


def test_empty_store_says_not_run(tmp_path: Path) -> None:
    out = tmp_path / "r" / "index.html"
    Store.open(tmp_path / "empty.db").close()  # a store with no runs (a missing one is exit 2)
    buf = io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(buf):
        code = main(["report", "--no-run", "--db", str(tmp_path / "empty.db"), "--out", str(out)])
    page = out.read_text()
    assert code == 0
    assert page.count("not run") >= 5
    assert "No sweep rows in the store" in page
    assert "The property suite has not run" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--out", "report.txt"], "--out must name an .html file", id="out-not-html"),
        pytest.param(["--jobs", "0"], "jobs must be >= 1", id="jobs-zero"),
        pytest.param(["--bogus"], "unrecognized arguments", id="unknown-flag"),
    ],
)
def test_bad_arguments(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.chdir(tmp_path):
        code = main(["report", "--no-run", "--db", str(tmp_path / "x.db"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
