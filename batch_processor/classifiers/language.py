"""Language identification with py3langid, its model loaded from a local cache when it can be.

py3langid ships its model LZMA-compressed, and decompressing it costs about 0.6 s of CPU at
every start of a worker. The decompressed model (a plain ``.npz`` of arrays, read with
``allow_pickle=False``) is kept in the user's cache directory, named by py3langid's version and
the model file's size, and loaded from there afterwards (about 0.2 s). Any problem with the
cache (no writable home, a damaged file) falls back to py3langid's own loader: the cache only
ever saves time.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from py3langid import langid, modelio

log = structlog.get_logger("batch_processor.classifiers")


def cache_dir() -> Path:
    """Where the decompressed model is kept: ``$XDG_CACHE_HOME/batch_processor`` or ~/.cache."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "batch_processor"


def load_identifier() -> Any:
    """py3langid's identifier, from the cached decompressed model when possible."""
    source = langid.MODEL_DIR / langid.MODEL_FILE
    cached = cache_dir() / (f"langid-{version('py3langid')}-{source.stat().st_size}.npz")
    try:
        if not cached.exists():
            _decompress(source, cached)
        return _from_npz(cached)
    except Exception as exc:  # noqa: BLE001 - the cache only saves time; never fail on it
        log.debug("language model cache not used", error=str(exc))
        with contextlib.suppress(OSError):
            cached.unlink()
        return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE)


def _decompress(source: Path, target: Path) -> None:
    """Write the decompressed model atomically (a reader never sees half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        try:
            with lzma.open(source) as compressed:
                shutil.copyfileobj(compressed, tmp, length=1 << 20)
            tmp.flush()
            Path(tmp.name).replace(target)
        except BaseException:
            Path(tmp.name).unlink()
            raise


def _from_npz(path: Path) -> Any:
    """The identifier from a decompressed model (the layout py3langid's own loader reads)."""
    with np.load(path, allow_pickle=False) as data:
        return langid.LanguageIdentifier(
            np.asarray(data["ptc"]),
            np.asarray(data["pc"]),
            data["classes"].tolist(),
            modelio._to_array(data["nextmove"]),
            data["out_feat"].tolist(),
            tk_row=modelio._to_array(data["nextmove_row"]),
        )
