"""The files of a study folder: only regular files, and a cheap fingerprint of them.

Standard library only: the workflow computes fingerprints at parse time.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def regular_files(folder, skipped=None):
    """Regular files under ``folder`` (recursive, sorted; symlinks to files followed; named
    pipes, sockets and devices skipped, so that reading never blocks). ``skipped``: a
    list that receives one phrase per entry not read (a folder that cannot be listed, a
    symbolic link to a folder, which is not followed, a file that cannot be examined), so
    that a refusal can say why slices or series are missing; never their names."""
    for path, _ in _regular_files_with_stat(folder, skipped):
        yield path


def _regular_files_with_stat(folder, skipped=None):
    note = skipped.append if skipped is not None else (lambda _text: None)
    for root, dirs, names in os.walk(folder, onerror=lambda _exc: note("a folder that cannot be listed")):
        dirs.sort()
        for d in dirs:
            if (Path(root) / d).is_symlink():
                note("a symbolic link to a folder (not followed)")
        for name in sorted(names):
            path = Path(root) / name
            try:
                st = path.stat()
            except OSError:
                note("a file that cannot be examined (a broken link or no permission)")
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


def folder_fingerprint(folder):
    """A short hash of a study folder's regular files (relative path, size, modification
    time and inode change time): it changes when a file is added, removed, replaced or
    edited in place, also when the edit keeps the size and restores the modification time
    (the change time cannot be set back). Copying the folder elsewhere changes it too: the
    studies then rerun once.

    'missing' or 'unreadable' for a folder that is not there or cannot be listed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "missing"
    if not os.access(folder, os.R_OK | os.X_OK):
        return "unreadable"
    h = hashlib.sha256()
    n = 0
    for path, st in _regular_files_with_stat(folder):
        h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
        n += 1
    return f"{n}-{h.hexdigest()[:16]}"
