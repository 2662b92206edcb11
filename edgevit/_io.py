"""Atomic writes: a failed run never leaves a half-written file or folder that looks valid."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import EdgevitError

__all__ = ["ensure_writable_dir", "require_folder", "atomic_directory", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "atomic_create_bytes"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; artifacts get the user's normal permissions.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def ensure_writable_dir(folder: str | Path, what: str = "output folder",
                        fix: str = "choose another with -o/--output") -> Path:
    """Create ``folder`` if needed and check it can take new files (before any slow work starts).

    ``what`` names the folder for the user ("the agent's folder"), ``fix`` says what to do instead."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgevitError(f"Cannot create {what} {folder}: {e.strerror or e}; {fix}.") from None
    if not os.access(folder, os.W_OK):
        raise EdgevitError(f"The {what} {folder} is not writable; {fix}.")
    return folder


def require_folder(folder: str | Path, what: str, expected: str, error: type[EdgevitError] = EdgevitError) -> Path:
    """``folder`` as a Path if it is an existing folder; otherwise ``error`` saying which of the two it is not.

    ``what`` names it ("Image folder"), ``expected`` says what belongs there ("images, nested folders too")."""
    folder = Path(folder).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise error(f"{what} {folder} is a file, not a folder; give the folder that holds {expected}.")
    raise error(f"{what} {folder} does not exist; give the folder that holds {expected}.")


def _writable_parent(path: Path) -> Path:
    return ensure_writable_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    parent = _writable_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(final: str | Path):
    """Yield a temporary sibling folder; on success it replaces ``final``, on failure it is removed."""
    final = Path(final)
    parent = _writable_parent(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=parent))
        os.replace(final, old / "previous")
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_create_bytes(path: str | Path, data: bytes) -> Path:
    """Like :func:`atomic_write_bytes`, but never replaces: FileExistsError if ``path`` exists."""
    path = Path(path)
    parent = _writable_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.link(tmp, path)  # atomic and exclusive: fails if the name is taken
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return path
