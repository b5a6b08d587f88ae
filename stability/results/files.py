"""Every file the tool writes: one rule for where it may go, and writes that never half-happen.

The rule (``check_outputs``): an output may not be the results store, another stability
database, an input of the same command, or another output of it; it must be writable. The
check runs before any long work, so a refusal costs seconds, not a finished sweep.

The writes (``atomic_path`` and the helpers on top): a temporary file in the same folder,
flushed to disk, then renamed over the target. A full disk, a file-size limit or an
interrupt leaves the old file exactly as it was and never a truncated one.
"""

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from stability.errors import StabilityError

APPLICATION_ID = 0x53544142  # "STAB" in the SQLite header: the file is a stability store
SQLITE_HEADER = b"SQLite format 3\x00"
_APPLICATION_ID_OFFSET = 68  # big-endian u32 in the 100-byte database header


def is_stability_db(path: Path) -> bool:
    """Whether ``path`` is an SQLite file marked with the store's application id."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except OSError:
        return False
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        return False
    offset = _APPLICATION_ID_OFFSET
    return int.from_bytes(header[offset : offset + 4], "big") == APPLICATION_ID


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same inode (links), or the same resolved path
    (symlinks, ``..``, and files that do not exist yet)."""
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _probe_write(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only test of writability that holds for
    root, read-only mounts and odd file systems alike."""
    probe = folder / f".stability-probe-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    probe.unlink()


def writable_path(path: Path | str, what: str) -> Path:
    """Fail early, before any work, if ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise StabilityError(f"{what} {str(path)!r} is a directory; pass a file path")
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StabilityError(f"{what} {str(path)!r} is not writable ({existing} is not a folder)")
    try:
        if existing == folder:
            _probe_write(folder)
        elif not os.access(existing, os.W_OK):  # the folders are made when writing
            raise PermissionError(13, "Permission denied")
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise StabilityError(
            f"{what} {str(path)!r} is not writable ({exc.strerror}); pass another path"
        ) from None
    return path


def check_outputs(
    outputs: Mapping[str, Path],
    store: Path | None = None,
    inputs: Iterable[Path] = (),
) -> None:
    """Refuse, before any work, an output that would destroy something: the store, another
    stability database, an input, or another output of the same command.

    ``outputs`` maps what each file is (``"--out"``, ``"figure file"``) to its path.
    """
    seen: list[tuple[str, Path]] = []
    for what, path in outputs.items():
        shown = f"{what} {str(path)!r}"
        if store is not None and same_file(path, store):
            raise StabilityError(
                f"{shown} is the results store (--db {str(store)!r}); writing it would destroy "
                "the stored results: pass another path"
            )
        for source in inputs:
            if same_file(path, source):
                raise StabilityError(
                    f"{shown} is also an input of this command; writing it would destroy "
                    "the input: pass another path"
                )
        if is_stability_db(path):
            raise StabilityError(
                f"{shown} is a stability results database; writing it would destroy the "
                "results in it: pass another path"
            )
        for other, earlier in seen:
            if same_file(path, earlier):
                raise StabilityError(f"{shown} is the same file as {other}: pass another path")
        seen.append((what, path))
        writable_path(path, what)


def check_store(store: Path, inputs: Iterable[Path]) -> None:
    """Refuse a store that is also an input of the command (``bench-ingest s.db --db s.db``)."""
    for source in inputs:
        if same_file(store, source):
            raise StabilityError(
                f"results database {str(store)!r} is also an input of this command: "
                "pass --db with another path"
            )


def _mode_for(path: Path) -> int:
    """The old file's permissions, or what a plain ``open`` would give under the umask."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_error(path: Path, what: str, exc: OSError) -> StabilityError:
    """One line for a write that failed: which file, why, and that the old one is intact."""
    reason = exc.strerror or type(exc).__name__
    return StabilityError(
        f"cannot write {what} {str(path)!r} ({reason}); nothing was changed there: free "
        "space (or raise the file-size limit) or pass another path"
    )


@contextlib.contextmanager
def atomic_path(path: Path, what: str = "output file") -> Iterator[Path]:
    """A temporary path to write; on success it replaces ``path`` in one rename.

    The temporary file sits in the target's folder (a rename never crosses file systems),
    is fsynced before the rename and the folder after it. Any failure removes it and leaves
    ``path`` as it was; an ``OSError`` becomes one line (``StabilityError``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _mode_for(path)))
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, what, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; some file systems cannot open a folder, which is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: Path, text: str, what: str = "output file") -> None:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(frame: pd.DataFrame, path: Path, what: str = "output file") -> None:
    """Write ``frame`` as CSV, without its index, atomically."""
    with atomic_path(path, what) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(figure: Any, path: Path, dpi: int = 120, what: str = "figure file") -> None:
    """Save a matplotlib figure atomically, in the format its file name says (PNG if none)."""
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path, what) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi)
