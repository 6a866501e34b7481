"""Where numba caches the compiled kernels (`@njit(cache=True)`), decided before they are imported.

numba caches beside the source (kernels/__pycache__) or in the user's cache (~/.cache/numba) and,
where neither can be written (a read-only install, HOME unset or read-only), raises at import time
("cannot cache function ...: no locator available"). Here: NUMBA_CACHE_DIR when set; else numba's
own choice when it works; else a fastyolo folder in the temp dir; else no caching at all (the
kernels then compile on every start, about a second).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from pathlib import Path


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def _numba_can_cache(source: str) -> bool:
    """Whether one of numba's default locators would accept a function defined in `source`."""
    from numba.core import caching

    def probe():  # only its code object's line number is read
        pass

    for locator in (caching.InTreeCacheLocator, caching.UserWideCacheLocator):
        try:
            if locator.from_function(probe, source) is not None:
                return True
        except Exception:
            continue
    return False


def configure() -> str:
    """Choose the cache folder for fastyolo's kernels; returns "numba default", a folder, or "off"."""
    from numba.core import config

    if config.CACHE_DIR:  # NUMBA_CACHE_DIR given: numba uses it
        return config.CACHE_DIR
    spec = importlib.util.find_spec("fastyolo.kernels")
    origin = spec.origin if spec is not None and spec.origin else None
    if origin is None or _numba_can_cache(origin):
        return "numba default"
    fallback = Path(tempfile.gettempdir()) / f"fastyolo-numba-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    if _writable(fallback):
        config.CACHE_DIR = str(fallback)
        return str(fallback)
    _disable_caching()
    return "off"


def _disable_caching() -> None:
    """No folder is writable: `cache=True` kernels compile without a cache instead of failing the import."""
    from numba.core.dispatcher import Dispatcher

    original = Dispatcher.enable_caching

    def enable_caching(self) -> None:
        with contextlib.suppress(RuntimeError):  # "cannot cache function ...: no locator available"
            original(self)

    Dispatcher.enable_caching = enable_caching
