"""PostgreSQL for the local platform: ``DATABASE_URL`` if set, else an embedded pgserver instance.

The embedded server (PostgreSQL 16 from the ``pgserver`` package) keeps its data in a fresh
temporary directory, listens on a Unix socket only, and is stopped and deleted by ``stop()``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("infra.postgres")


class LocalPostgres:
    """``start()`` returns the database URL; ``stop()`` stops the embedded server (idempotent)."""

    def __init__(self, *, url: str | None = None, datadir: str | Path | None = None) -> None:
        self.external_url = url if url is not None else os.environ.get("DATABASE_URL") or None
        self.requested_datadir = Path(datadir) if datadir is not None else None
        self._server: Any = None
        self._tempdir: Path | None = None
        self.datadir: Path | None = None
        self.url: str | None = None

    @property
    def embedded(self) -> bool:
        return self._server is not None

    @property
    def pid(self) -> int | None:
        if self._server is None:
            return None
        pid: int | None = self._server.get_pid()
        return pid

    def start(self) -> str:
        if self.url is not None:
            return self.url
        if self.external_url:
            self.url = self.external_url
            log.info("using DATABASE_URL from the environment")
            return self.url
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver

        if self.requested_datadir is not None:
            self.datadir = self.requested_datadir.resolve()
            self.datadir.parent.mkdir(parents=True, exist_ok=True)
            cleanup_mode = "stop"
        else:
            self._tempdir = Path(tempfile.mkdtemp(prefix="callsight-pg-"))
            self.datadir = self._tempdir / "pgdata"
            cleanup_mode = "delete"
        try:
            self._server = pgserver.get_server(self.datadir, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]
        except BaseException:
            self._remove_tempdir()
            raise
        self.url = str(self._server.get_uri())
        log.info("embedded PostgreSQL started (pid %s, data %s)", self.pid, self.datadir)
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        self.url = None
        if server is not None:
            try:
                server.cleanup()
            finally:
                self._remove_tempdir()
            log.info("embedded PostgreSQL stopped")

    def _remove_tempdir(self) -> None:
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None
