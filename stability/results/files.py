"""Every file the tool writes: one rule for where it may go, and writes that never half-happen.

The rule (``check_outputs``): an output may not be the results store (or its journal, WAL
or shared-memory file), another stability database, an input of the same command, another
output of it, or the user's source (a ``.py``-family file, or the file of any imported
module); it must be a writable regular file or a new path. A symlink is followed to its
target, and the target's rules apply; a dangling link, a loop, a FIFO, a socket or a device
other than ``/dev/null`` is refused. The check runs before any long work, so a refusal costs
seconds, not a finished sweep.

The reads (``read_input``): an input file must be a regular file of at most
``MAX_INPUT_BYTES``: ``bench-ingest /dev/zero`` is one line, not a machine out of memory.

The writes (``atomic_path`` and the helpers on top): a temporary file in the same folder,
flushed to disk, then renamed over the target. A full disk, a file-size limit or an
interrupt leaves the old file exactly as it was and never a truncated one.
"""

import contextlib
import errno
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stability.errors import StabilityError

if TYPE_CHECKING:
    import pandas as pd

APPLICATION_ID = 0x53544142  # "STAB" in the SQLite header: the file is a stability store
SQLITE_HEADER = b"SQLite format 3\x00"
_APPLICATION_ID_OFFSET = 68  # big-endian u32 in the 100-byte database header
# A user's source, never an output: Python, stubs, bytecode, extensions, Cython, notebooks.
SOURCE_SUFFIXES = (".py", ".pyw", ".pyi", ".pyc", ".pyo", ".pyd", ".pyx", ".pxd", ".pxi",
                   ".ipynb")  # fmt: skip
SIDE_FILES = ("-journal", "-wal", "-shm")  # SQLite's files beside a database
MAX_INPUT_BYTES = 256 * 2**20  # the largest input file read: far above any real one


def is_stability_db(path: Path) -> bool:
    """Whether ``path`` is an SQLite file marked with the store's application id."""
    with contextlib.suppress(OSError):
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read below
            return False
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


def is_devnull(path: Path) -> bool:
    """Whether ``path`` is the null device: an output there is discarded, never replaced."""
    with contextlib.suppress(OSError):
        return os.path.samefile(path, os.devnull)
    return False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _check_node(path: Path, what: str) -> None:
    """Refuse what is no file to write: a dangling link, a loop, a folder, a FIFO, a device."""
    shown = f"{what} {str(path)!r}"
    try:
        mode = os.stat(path).st_mode  # follows symlinks: the target is what gets written
    except FileNotFoundError:
        if os.path.islink(path):
            raise StabilityError(
                f"{shown} is a symlink to {os.readlink(path)!r}, which does not exist; "
                "pass the target's path, or another path"
            ) from None
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StabilityError(f"{shown} is a symlink loop; pass another path") from None
        return  # not reachable: the write probe below names why
    if stat.S_ISDIR(mode):
        raise StabilityError(f"{shown} is a directory; pass a file path")
    if not stat.S_ISREG(mode) and not is_devnull(path):
        raise StabilityError(
            f"{shown} is {_kind(mode)}, not a regular file; pass a file path (or /dev/null)"
        )


def _imported_from(target: str) -> str | None:
    """The name of an imported module whose file is ``target`` (a resolved path), if any."""
    name = os.path.basename(target)
    for module_name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.basename(file) == name:
            with contextlib.suppress(OSError, ValueError):
                if os.path.realpath(file) == target:
                    return module_name
    return None


def check_not_source(path: Path, what: str) -> None:
    """Refuse a user's source as an output: a ``.py``-family file (by its name, or the name
    of the file a link points to), or the file of any imported module."""
    shown = f"{what} {str(path)!r}"
    try:
        target = os.path.realpath(path)
    except (OSError, ValueError):
        target = str(path)
    for name in (path.name, os.path.basename(target)):
        suffix = Path(name).suffix.lower()
        if suffix in SOURCE_SUFFIXES:
            if name != path.name:
                shown += f" (a link to {target!r})"
            raise StabilityError(
                f"{shown} is Python source ({suffix} file); an output never overwrites "
                "source: pass a path ending in the output's own format (.csv, .json, ...)"
            )
    if os.path.exists(target):
        module = _imported_from(target)
        if module is not None:
            raise StabilityError(
                f"{shown} is the file of the imported module {module!r}; an output never "
                "overwrites source: pass another path"
            )


def writable_path(path: Path | str, what: str) -> Path:
    """Fail early, before any work, if ``path`` cannot be written or must not be: the user's
    source, or no regular file (``_check_node``)."""
    path = Path(path)
    _check_node(path, what)
    check_not_source(path, what)
    if is_devnull(path):
        return path
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
        _check_node(path, what)  # before any read of it: a FIFO would block
        if store is not None and same_file(path, store):
            raise StabilityError(
                f"{shown} is the results store (--db {str(store)!r}); writing it would destroy "
                "the stored results: pass another path"
            )
        _check_side_file(path, shown, store)
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


def _check_side_file(path: Path, shown: str, store: Path | None) -> None:
    """Refuse a database's journal, WAL or shared-memory file: writing one corrupts it."""
    for side in SIDE_FILES:
        if not path.name.endswith(side) or len(path.name) == len(side):
            continue
        base = path.with_name(path.name[: -len(side)])
        if (store is not None and same_file(base, store)) or is_stability_db(base):
            raise StabilityError(
                f"{shown} is the {side.lstrip('-')} file of the results database "
                f"{str(base)!r}; writing it would corrupt the database: pass another path"
            )


def read_input(path: Path, what: str, limit: int | None = None) -> bytes:
    """The bytes of the input file ``path``: a regular file of at most ``limit`` bytes
    (default ``MAX_INPUT_BYTES``; ``/dev/zero``, a FIFO or a folder is refused before a
    byte is read); one line if not."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    shown = f"{what} {str(path)!r}"
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise StabilityError(f"{shown} is a directory; pass a file")
        if not stat.S_ISREG(mode):
            raise StabilityError(f"{shown} is {_kind(mode)}, not a regular file; pass a file")
        with path.open("rb") as f:
            data = f.read(limit + 1)  # a file that grows while read is still bounded
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StabilityError(f"cannot read {shown}: {reason}") from None
    if len(data) > limit:
        raise StabilityError(
            f"{shown} is over the input size limit of {limit / 2**20:g} MiB; pass a smaller file"
        )
    return data


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
    if is_devnull(path):  # written and discarded: the device itself is never replaced
        yield Path(os.devnull)
        return
    if path.is_symlink():  # the link stays; its target is what gets replaced
        path = Path(os.path.realpath(path))
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


def write_csv(frame: "pd.DataFrame", path: Path, what: str = "output file") -> None:
    """Write ``frame`` as CSV, without its index, atomically."""
    with atomic_path(path, what) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(figure: Any, path: Path, dpi: int = 120, what: str = "figure file") -> None:
    """Save a matplotlib figure atomically, in the format its file name says (PNG if none)."""
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path, what) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi)
