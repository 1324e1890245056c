"""Certificate watching: reload when a file the configuration names changes.

With ``watch_certificates`` on, `FileWatcher` polls every file the running
configuration names (the tls.cfg files, certificates, keys, CA files and
directories, CRLs) with a `LoopingCall` on the service's clock.  A poll only
``stat()``s the files: modification time, size and inode, so an atomic
rename-into-place is seen as well as an in-place rewrite.

When anything differs from the last state seen, the watcher calls
``on_change(changed_paths)`` once.  The state seen is remembered whether or
not that reload succeeds: a broken certificate is reported once per change,
not once per poll, and the next change (say, the matching key being written)
triggers the next attempt.  After a successful reload the list of files is
taken again from the new configuration.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from siptls.errors import SIPTLSError

__all__ = ["FileWatcher", "watched_files"]

log = Logger(namespace="siptls.watch")

# (mtime_ns, size, inode), or None while the file is missing or unreadable.
FileState = tuple[int, int, int] | None

_DOMAIN_FILES = ("certificate", "private_key", "ca_list", "ca_path", "crl")


def watched_files(config: Any) -> list[str]:
    """Every file (and CA directory) ``config`` names, each once, in a stable order."""
    paths: list[str] = list(getattr(config, "config_files", ()))
    for domain in getattr(config, "domains", ()):
        for key in _DOMAIN_FILES:
            value = getattr(domain, key, None)
            if value:
                paths.append(value)
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def _state(path: str) -> FileState:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class FileWatcher:
    """Polls ``files()`` every ``interval`` seconds; calls ``on_change`` on a change.

    ``on_change`` receives the paths that changed.  It may raise
    `siptls.errors.SIPTLSError` (a refused reload, which it has already
    reported); any other exception is logged.  Either way the watcher keeps
    polling.
    """

    def __init__(
        self,
        files: Callable[[], Iterable[str]],
        on_change: Callable[[list[str]], object],
        clock: IReactorTime,
        interval: float = 5.0,
    ) -> None:
        self.files = files
        self.on_change = on_change
        self.clock = clock
        self.interval = interval
        self._seen: dict[str, FileState] = {}
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self.changes = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        return bool(self._loop.running)

    def start(self) -> None:
        """Remember the files' current state and start polling."""
        self._seen = self._snapshot(self.files())
        log.info(
            "Watching {count} certificate and configuration files every {interval:g} s.",
            count=len(self._seen),
            interval=self.interval,
        )
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        """Look at every file once; reload if any changed since the last look."""
        now = self._snapshot(self._seen)
        changed = [path for path, state in now.items() if self._seen.get(path) != state]
        if not changed:
            return
        self.changes += 1
        self._seen = now
        try:
            self.on_change(changed)
        except SIPTLSError:
            self.failures += 1  # already reported by the reload; wait for the next change
            return
        except Exception:
            self.failures += 1
            log.failure("Reloading after a change of {files} failed.", files=", ".join(changed))
            return
        # The new configuration may name other files.
        self._seen = self._snapshot(self.files())

    @staticmethod
    def _snapshot(paths: Iterable[str]) -> dict[str, FileState]:
        return {path: _state(path) for path in paths}
