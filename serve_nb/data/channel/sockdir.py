"""Where a replica's Unix socket lives, so that only its own user can reach it and nothing stays behind.

Each replica process makes its own directory, ``serve_nb-<pid>-<random>`` with mode 0700
(``tempfile.mkdtemp``: created atomically, never an existing path an attacker prepared), under Ray's
session directory (or the temp dir), and binds ``ch.sock`` (0600) in it. A graceful stop removes
it; one a crashed process left is removed by the next replica that starts under the same base, once
its pid is dead. Sockets of older versions (``<tmp>/serve_nb-<pid>-<port>.sock``) are swept likewise.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile

#: The directory holding one process's socket: its user only (search permission guards the socket).
DIR_MODE = 0o700
#: The socket file itself: its user only, in case the directory's mode is ever widened.
SOCKET_MODE = 0o600
#: File name of the socket inside the private directory.
SOCKET_NAME = "ch.sock"
#: Linux's limit on a Unix socket path (sun_path is 108 bytes with the trailing NUL).
MAX_SOCKET_PATH = 107
#: Names this module creates (and sweeps): ``serve_nb-<pid>-<mkdtemp suffix>``.
DIR_PATTERN = re.compile(r"serve_nb-(\d+)-[A-Za-z0-9_]+")
#: Socket files of versions before the private directories: ``serve_nb-<pid>-<port>.sock``.
LEGACY_PATTERN = re.compile(r"serve_nb-(\d+)-\d+\.sock")


def pid_alive(pid: int) -> bool:
    """True unless ``pid`` certainly no longer exists (another user's live process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(base: str) -> list[str]:
    """Remove what processes of this user, now dead, left under ``base``; returns what was removed."""
    removed: list[str] = []
    uid = os.getuid()
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        match = DIR_PATTERN.fullmatch(name) or LEGACY_PATTERN.fullmatch(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
            if st.st_uid != uid:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            elif stat.S_ISSOCK(st.st_mode):
                os.unlink(path)
            else:
                continue
        except OSError:
            continue  # another replica swept it first, or it is not ours to remove
        removed.append(path)
    return removed


def make_socket_path(base: str | None) -> tuple[str, str]:
    """A fresh private directory under ``base`` (the temp dir if None, or if the path would be too
    long for a Unix socket) and the socket path in it; stale leftovers there are swept first."""
    candidates = [b for b in (base, tempfile.gettempdir()) if b]
    for candidate in candidates:
        # mkdtemp's suffix is 8 characters; the pid at most 7 digits on Linux.
        if len(os.path.join(candidate, f"serve_nb-{os.getpid()}-12345678", SOCKET_NAME)) <= MAX_SOCKET_PATH:
            break
    else:
        raise OSError("no directory short enough for a Unix socket path")
    sweep_stale(candidate)
    if candidate != tempfile.gettempdir():
        sweep_stale(tempfile.gettempdir())  # where older versions put theirs
    directory = tempfile.mkdtemp(prefix=f"serve_nb-{os.getpid()}-", dir=candidate)
    os.chmod(directory, DIR_MODE)  # mkdtemp makes it 0700 already; state the intent
    return directory, os.path.join(directory, SOCKET_NAME)


def remove_dir(directory: str) -> None:
    """Remove a directory made by ``make_socket_path`` and its socket (gone already is fine)."""
    shutil.rmtree(directory, ignore_errors=True)
