"""CatalogStore: the process's active catalog, swapped atomically on reload.

The store never installs signal handlers; the app wires ``SIGHUP`` and
``POST /admin/catalog/reload`` to :meth:`CatalogStore.reload`.
"""

from __future__ import annotations

import threading
from os import PathLike
from pathlib import Path

from tollkeep.catalog.errors import CatalogError
from tollkeep.catalog.loader import load_catalog, parse_catalog
from tollkeep.catalog.model import Catalog
from tollkeep.kit.errors import TollkeepError

__all__ = ["CatalogStore"]

_MAX_REMEMBERED = 64


class CatalogStore:
    """Thread-safe holder of the active :class:`Catalog`.

    Build it from a file path (read now, re-read by :meth:`reload`) or from a
    ``Catalog`` (optionally with the ``path`` to reload from; when omitted, the
    catalog's ``source`` is used if it names a file). A failed load raises
    ``CatalogError`` and leaves the current catalog in place.
    """

    def __init__(
        self, initial: Catalog | str | PathLike[str], *, path: str | PathLike[str] | None = None
    ) -> None:
        self._lock = threading.Lock()
        if isinstance(initial, Catalog):
            catalog = initial
            if path is None and initial.source and not initial.source.startswith("<"):
                path = initial.source
        else:
            path = initial if path is None else path
            catalog = load_catalog(initial)
        self._path: Path | None = None if path is None else Path(path)
        self._current = catalog
        self._versions: list[str] = [catalog.version]
        self._by_version: dict[str, Catalog] = {catalog.version: catalog}

    @property
    def current(self) -> Catalog:
        with self._lock:
            return self._current

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def versions(self) -> list[str]:
        """Versions made active in this process, oldest first (a copy)."""
        with self._lock:
            return list(self._versions)

    def get(self, version: str) -> Catalog | None:
        """A catalog made active earlier in this process, by version (recent ones only)."""
        with self._lock:
            return self._by_version.get(version)

    def reload(self) -> Catalog:
        """Re-read the file; returns the (possibly unchanged) active catalog.

        On ``CatalogError`` the old catalog stays active and the error is re-raised.
        """
        if self._path is None:
            raise TollkeepError(
                "this catalog was not loaded from a file; nothing to reload",
                code="catalog_reload_unavailable",
                status=409,
            )
        return self._install(load_catalog(self._path))

    def load_text(self, text: str, *, source: str | None = None) -> Catalog:
        """Validate ``text`` and make it active (CatalogError keeps the old one)."""
        return self._install(parse_catalog(text, source=source or (str(self._path) if self._path else None)))

    def set(self, catalog: Catalog) -> Catalog:
        """Make an already-validated catalog active."""
        return self._install(catalog)

    def _install(self, catalog: Catalog) -> Catalog:
        if not isinstance(catalog, Catalog):  # pragma: no cover - defensive
            raise CatalogError([{"file": None, "key": "", "reason": "not a Catalog"}])
        with self._lock:
            if catalog.version == self._current.version:
                return self._current
            self._current = catalog
            self._versions.append(catalog.version)
            self._by_version[catalog.version] = catalog
            while len(self._by_version) > _MAX_REMEMBERED:
                oldest = next(iter(self._by_version))
                if oldest == catalog.version:
                    break
                del self._by_version[oldest]
            return catalog
