"""The one atomic file writer: every file the kit writes (tables, checkpoints, feature caches, logs, configs) goes
through `atomic_write`, so a run killed mid-write never leaves a half-written file that a later step would read as
complete, and a full disk says so."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from torch import Tensor

if TYPE_CHECKING:  # pandas stays off the import path of loading weights (gpu_check's minimal machines)
    import pandas as pd


@contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A temp path in `path`'s folder (same file system, so os.replace is atomic); removed if writing fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if disk_full(err):
            raise OSError(errno.ENOSPC, f"disk full while writing {path} ({free_space(path.parent)} on its disk); "
                                        f"nothing was written and the previous {path.name}, if any, is unchanged: "
                                        "free space and rerun (finished files are untouched)") from err
        raise


def disk_full(err: BaseException) -> bool:
    """Is `err` a full disk (or quota)? Python raises OSError ENOSPC/EDQUOT; safetensors' Rust writer raises its
    own error (not an OSError) whose text carries the OS error ("os error 28", "StorageFull", "No space left")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return not isinstance(err, OSError) and any(
        mark in text for mark in ("No space left on device", "StorageFull", "os error 28", "code: 28",
                                  "Disk quota exceeded"))


def free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free} bytes free"
    except OSError:
        return "free space unknown"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` fills a temp file beside `path`, which then replaces `path` in one step."""
    path = Path(path)
    with _temporary_beside(path) as tmp:
        write(tmp)
        os.replace(tmp, path)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_dataframe(table: "pd.DataFrame", path: str | os.PathLike) -> Path:
    """A DataFrame, atomically: .parquet keeps list columns, anything else is CSV."""
    if Path(path).suffix == ".parquet":
        return atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def save_safetensors(state: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Tensors as safetensors, atomically (contiguous CPU copies, as safetensors requires)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
