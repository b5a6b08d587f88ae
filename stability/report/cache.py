"""The runner's cache: what the code is (fingerprint) and what was already run for it.

Subprocess runs (the property suite, the quick benchmarks), the doctor's defaults and the
gate's verdicts are reused when the *fingerprint* matches: git commit, a hash of the dirty
state (tracked diff plus untracked files), torch/python versions and the run's options.
The index is ``<db folder>/report-cache/index.json`` beside the files it names.
"""

import hashlib
import importlib.metadata
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stability.report.inputs import CACHE_DIR, PropertyRun
from stability.results.environment import environment
from stability.results.files import write_text


def _git(root: Path, *args: str) -> bytes | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _hash_file(h: "hashlib._Hash", path: Path) -> None:
    h.update(str(path).encode())
    try:
        size = path.stat().st_size
        if size > 5_000_000:  # large scratch files: size and mtime stand in for content
            h.update(f"{size}:{path.stat().st_mtime_ns}".encode())
        else:
            h.update(path.read_bytes())
    except OSError:
        h.update(b"<unreadable>")


def code_state(root: Path, exclude: Sequence[Path] = ()) -> tuple[str, str]:
    """(hash, label) of the code: commit plus the dirty state, or the sources outside git."""
    h = hashlib.sha256()
    head = _git(root, "rev-parse", "HEAD")
    if head is not None:
        commit = head.decode().strip()
        diff = _git(root, "diff", "HEAD", "--binary") or b""
        h.update(commit.encode())
        h.update(diff)
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z") or b""
        excluded = [e.resolve() for e in exclude]
        names = sorted(n for n in untracked.decode(errors="replace").split("\0") if n)
        dirty = bool(diff)
        for name in names:
            path = (root / name).resolve()
            if any(path == e or e in path.parents for e in excluded):
                continue
            dirty = True
            _hash_file(h, path)
        label = commit[:12] + (f"+dirty:{h.hexdigest()[:8]}" if dirty else "")
        return h.hexdigest(), label
    for folder in ("stability", "properties", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            _hash_file(h, path)
    _hash_file(h, root / "pyproject.toml")
    return h.hexdigest(), f"no git; sources {h.hexdigest()[:8]}"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def fingerprint(code: str, kind: str, options: dict[str, Any]) -> str:
    """Code hash + environment + run options: equal fingerprints give equal results."""
    env = {
        "code": code,
        "kind": kind,
        **environment(("torch", "python", "machine")),
        "hypothesis": _version("hypothesis"),
        "pytest": _version("pytest"),
        "pytest-benchmark": _version("pytest-benchmark"),
        **options,
    }
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()


class Cache:
    """The index of cached runs: kind -> list of entries, newest last."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index = folder / "index.json"

    @classmethod
    def beside(cls, db: Path) -> "Cache":
        """The cache that belongs to the store ``db``."""
        return cls(db.parent / CACHE_DIR)

    def load(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = json.loads(self.index.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def find(self, kind: str, fp: str | None = None) -> dict[str, Any] | None:
        """The newest entry of ``kind`` (with fingerprint ``fp`` if given)."""
        for entry in reversed(self.load().get(kind, [])):
            if isinstance(entry, dict) and (fp is None or entry.get("fingerprint") == fp):
                return dict(entry)
        return None

    def add(self, kind: str, entry: dict[str, Any]) -> None:
        data = self.load()
        data.setdefault(kind, []).append(entry)
        write_text(self.index, json.dumps(data, indent=1), "report cache index")

    def stored_run(
        self, kind: str, fp: str, has_run: Callable[[int], bool]
    ) -> dict[str, Any] | None:
        """The entry of a run of ``kind`` made for ``fp`` whose rows are still in the store
        (a replaced or trimmed store invalidates it); None: compute again."""
        cached = self.find(kind, fp)
        return cached if cached is not None and has_run(int(cached["run_id"])) else None

    def add_run(self, kind: str, fp: str, label: str, run_id: int, seconds: float) -> None:
        """Record a stored run of ``kind`` made for ``fp``, stamped now."""
        self.add(kind, {"fingerprint": fp, "code": label, "run_id": run_id,
                        "seconds": round(seconds, 1),
                        "finished": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip


def property_options(quick: bool) -> dict[str, Any]:
    """The property run's options (part of its fingerprint): ``--quick`` runs the dev
    profile without the slow tests; the full report, the ci profile."""
    return {"profile": "dev", "quick": True} if quick else {"profile": "ci", "quick": False}


def property_run(entry: dict[str, Any], current: bool | None, how: str) -> PropertyRun:
    """A cache entry of the property suite as the report's input."""
    log = entry.get("log")
    return PropertyRun(
        junit=Path(entry["junit"]),
        log=Path(log) if log else None,
        source=f"{how}; pytest properties --hypothesis-profile=ci at {entry.get('finished')} "
        f"on code {entry.get('code')}",
        current=current,
        exit_code=entry.get("exit_code"),
        finished=entry.get("finished"),
    )


def latest_properties(db: Path, root: Path, code: str | None) -> PropertyRun | None:
    """For ``--no-run``: the newest cached property run, or a junit XML the nox sessions wrote."""
    entry = Cache.beside(db).find("properties")
    if entry is not None and Path(entry["junit"]).exists():
        current = None
        if code is not None:
            fp = fingerprint(code, "properties", property_options(bool(entry.get("quick"))))
            current = fp == entry.get("fingerprint")
        how = "from the cache (same code)" if current else "from the cache, older code"
        return property_run(entry, current, how)
    for candidate in (root / "results" / "properties-junit.xml", root / "results" / "junit.xml"):
        if candidate.exists():
            return PropertyRun(
                junit=candidate,
                log=None,
                source=f"{candidate} (written by a nox session; its code version is unknown)",
                current=None,
            )
    return None
