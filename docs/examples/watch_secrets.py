#!/usr/bin/env python3
"""Reacts when a secret on a secrets-store volume changes (docs/rotation.md).

    python3 watch_secrets.py DIR FILE      e.g.  python3 watch_secrets.py /mnt/secrets db-password

Prints FILE (a name inside DIR) at start and again each time its content changes; a real
application would reload its configuration where this one prints. Needs inotify_simple (pure
Python, no compiler): `pip install inotify_simple`, in a virtual environment where the system's
Python refuses installs (Debian 12: `python3 -m venv env && env/bin/pip install inotify_simple`).

It watches the directory, not the file. The driver never writes into a file: it writes a new
generation directory and atomically renames the `..data` symlink over the old one, so
DIR/FILE -> ..data/FILE resolves to a new inode. A watch on the file (the guide's IN_MODIFY
example) stays on the old inode, which is deleted, and never fires again.
"""

import os
import sys

from inotify_simple import INotify, flags

# How long a burst of events (new generation, link, rename, clean-up) may take, in ms.
SETTLE_MS = 100


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def show(name, content):
    print("%s: %s" % (name, "(missing)" if content is None else content.rstrip("\n")), flush=True)


def main():
    if len(sys.argv) != 3:
        print("usage: watch_secrets.py DIR FILE", file=sys.stderr)
        return 2
    directory, name = sys.argv[1], sys.argv[2]
    path = os.path.join(directory, name)
    inotify = INotify()
    # Watch before the first read, so a change between the two is not missed.
    inotify.add_watch(directory, flags.MOVED_TO | flags.CREATE | flags.DELETE | flags.CLOSE_WRITE)
    current = read(path)
    show(name, current)
    while True:
        events = inotify.read(read_delay=SETTLE_MS)
        # Compare the content, so the application reacts once per actual change.
        latest = read(path)
        if latest != current:
            seen = ", ".join(
                "%s %s" % ("|".join(f.name for f in flags.from_mask(e.mask)), e.name) for e in events
            )
            print("inotify on %s: %s" % (directory, seen), flush=True)
            show(name, latest)
            current = latest


if __name__ == "__main__":
    sys.exit(main())
