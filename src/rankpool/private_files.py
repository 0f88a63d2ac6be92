"""Files only the run's owner may read: run directories, logs, scripts, ``interchange.json``.

A run directory holds what lets its reader act as the run (keys, the interchange's ports, the
pool command) and what its tasks print, so it is made 0700 and every file in it 0600 (0700
for scripts), whatever the umask. An existing directory is used only when it is a real
directory (not a link), belongs to this user and no one else may write to it; a file is
opened with ``O_NOFOLLOW`` (a link planted in its place is refused, never followed), a
temporary file with ``O_EXCL`` as well, and modes are set on the open descriptor
(``fchmod``), never through a path that could be a link.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import IO

from .errors import RunDirError

#: the mode of every file rankpool writes in a run directory, and of the scripts among them
FILE_MODE, SCRIPT_MODE = 0o600, 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_dir(path: str) -> str:
    """Create ``path`` (and missing parents) 0700, or check an existing one; its absolute path.

    Refused with :class:`~rankpool.errors.RunDirError`, saying why, when it is a link or not a
    directory, belongs to another user, or is group- or world-writable; an existing private
    directory that others may read or enter is tightened to 0700.
    """
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # something else is there: said below
    except OSError as exc:
        raise RunDirError(path, f"cannot be created: {exc.strerror}") from None
    check_owned(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        raise RunDirError(path, f"cannot be opened: {exc.strerror}") from None
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def check_owned(path: str) -> None:
    """Raise :class:`~rankpool.errors.RunDirError` unless ``path`` is a directory of this
    user's that no one else may write to."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise RunDirError(path, f"cannot be read: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise RunDirError(path, "is a symbolic link; name the directory itself")
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(path, "is not a directory")
    if st.st_uid != os.getuid():
        raise RunDirError(path, f"belongs to uid {st.st_uid}, not to this user (uid "
                                f"{os.getuid()}); another user could read or replace the run's "
                                "keys, logs and scripts")
    if st.st_mode & 0o022:
        raise RunDirError(path, f"is writable by its group or by others (mode "
                                f"{stat.S_IMODE(st.st_mode):04o}); they could replace the "
                                "run's files. Run chmod 700 on it or choose another directory")


def open_private(path: str, *, append: bool = True, mode: int = FILE_MODE,
                 exclusive: bool = False) -> int:
    """A descriptor open for writing on ``path``, created ``mode`` (or made so: ours only).

    ``append``: keep what is there (a log); else truncate. ``exclusive``: the file must not
    exist (a temporary file). A link at ``path`` is refused (``O_NOFOLLOW``), as is a file
    of another user's.
    """
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_EXCL if exclusive else (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        raise RunDirError(path, f"cannot be opened for writing ({exc.strerror}); a link there "
                                "is refused, not followed") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise RunDirError(path, f"belongs to uid {st.st_uid}, not to this user")
        if not stat.S_ISREG(st.st_mode):
            raise RunDirError(path, "is not a regular file")
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)  # whatever the umask, or an older file's mode
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: str, data: str | bytes, *, mode: int = FILE_MODE) -> str:
    """Write ``path`` whole, ``mode``, through a temporary file renamed into place (a reader
    never sees half a file); return ``path``."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = open_private(tmp, exclusive=True, mode=mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def open_private_text(path: str, *, append: bool = True) -> IO[str]:
    """``open_private`` as a text stream (UTF-8)."""
    return os.fdopen(open_private(path, append=append), "a" if append else "w",
                     encoding="utf-8")


class PrivateFileHandler(logging.FileHandler):
    """A log file created 0600 (and never through a link), appended to."""

    # FileHandler's stub says TextIOWrapper; any text stream does
    def _open(self) -> IO[str]:  # type: ignore[override]
        return open_private_text(self.baseFilename)
