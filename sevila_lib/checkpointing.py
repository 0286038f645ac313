"""Training checkpoints that resume bit for bit: the trained bridge (safetensors), optimiser, scheduler and scaler
state, the data position and every process's RNG state, written into a temp folder renamed when complete; the
`latest` pointer is written last, so it always names a complete checkpoint.

Faults: a checkpoint that cannot be read any more (a file cut short or damaged after it was written) is skipped
with a warning, and the run resumes from the newest intact one before it; a run is refused when the data differ
from those it started with (the checkpoint stores a fingerprint of the dataset's question ids) or its recipe
changed; a full disk while saving says so, removes the half-written checkpoint and keeps `latest` on the last
complete one."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from .checkpoints import BRIDGES_FILE, load_bridges, read_safetensors, save_bridges
from .files import atomic_write_text, disk_full, free_space
from .model import SeViLA
from .train_config import TrainConfig


@dataclass
class Position:
    """Where a run is: optimizer steps done, current epoch, batches (per process) consumed in it, samples seen."""

    step: int = 0
    epoch: int = 0
    batches: int = 0
    samples: int = 0


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by `<output_dir>/latest`, written last, so it always names a complete checkpoint."""
    pointer = Path(output_dir) / "latest"
    return Path(output_dir) / pointer.read_text().strip() if pointer.exists() else None


def data_fingerprint(dataset) -> str:
    """A short hash of what a run trains on: the dataset's question ids in order (`dataset.samples`, as
    `datasets.VideoQADataset` has, or `dataset.question_ids`), else only its length."""
    samples = getattr(dataset, "samples", None)
    ids = ([str(s.question_id) for s in samples] if samples is not None
           else [str(q) for q in getattr(dataset, "question_ids", [])])
    count = len(ids) if ids else len(dataset)
    return f"{count} items, " + hashlib.sha256("\n".join(ids or [f"<{count} items>"]).encode()).hexdigest()[:16]


def _step(path: Path) -> int:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def checkpoint_candidates(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints to resume from, best first: the one `latest` names, then the older complete ones, newest first
    (every `checkpoint-<step>` folder was renamed into place only when complete)."""
    out = Path(output_dir)
    try:
        named = latest_checkpoint(out)
    except OSError:
        named = None
    folders = sorted((p for p in out.glob("checkpoint-*") if p.is_dir() and _step(p) >= 0), key=_step, reverse=True)
    if named is None:
        return folders
    return [named] + [p for p in folders if _step(p) < _step(named)]


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator: Accelerator, model: SeViLA, config: TrainConfig, optimizer, scheduler,
                    position: Position, data: str | None = None) -> Path:
    """`<output_dir>/checkpoint-<step>/`: the trained bridge (safetensors), optimizer + scheduler + scaler state,
    the data position, the data fingerprint (`data_fingerprint`), and one RNG file per process. Written into a temp
    dir that is renamed when complete; the `latest` pointer is written last. A full disk raises OSError(ENOSPC)
    saying so; the half-written folder is removed and `latest` still names the last complete checkpoint."""
    out = Path(config.output_dir)
    final, tmp = out / f"checkpoint-{position.step}", out / f".checkpoint-{position.step}.tmp"
    try:
        return _save(accelerator, model, config, optimizer, scheduler, position, data, final, tmp)
    except BaseException as err:
        if not disk_full(err):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            last = latest_checkpoint(out)
        except OSError:
            last = None
        raise OSError(errno.ENOSPC, f"disk full while writing checkpoint {final} ({free_space(out)} on its disk): "
                                    f"it was removed; the last complete checkpoint is {last or 'none'}. Free some "
                                    f"space and run again with resume=True (--resume)") from err


def _save(accelerator, model, config, optimizer, scheduler, position, data, final: Path, tmp: Path) -> Path:
    out = final.parent
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        save_bridges(model, tmp, which=config.bridge)
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler,
                    "position": asdict(position)}, tmp / "trainer_state.pt")
        atomic_write_text(tmp / "trainer_state.json", json.dumps(
            {"position": asdict(position), "processes": accelerator.num_processes, "config": asdict(config),
             "data": data}, indent=2))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # left by a run that died before moving `latest` on; this one replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(out / "latest", final.name)
    accelerator.wait_for_everyone()
    return final


# Fields that may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = {"max_steps", "checkpoint_every", "log_every", "progress_bar", "num_workers", "output_dir"}


class UnreadableCheckpoint(ValueError):
    """A checkpoint folder whose files cannot be read any more; resuming skips it for an older one."""


def _read(checkpoint: Path, accelerator: Accelerator) -> tuple[dict, dict, dict]:
    """Everything a checkpoint holds, read before anything is restored, so a damaged file changes nothing."""
    try:
        saved = json.loads((checkpoint / "trainer_state.json").read_text())
        read_safetensors(checkpoint / BRIDGES_FILE)
        state = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True)
        rng = torch.load(checkpoint / f"rng_state_{accelerator.process_index}.pt", weights_only=True)
        _ = saved["config"], saved["processes"], state["optimizer"], state["scheduler"], state["position"]
    except Exception as err:  # missing or cut files: OSError, JSONDecodeError, ValueError, RuntimeError, KeyError
        raise UnreadableCheckpoint(f"{checkpoint}: unreadable checkpoint ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0] if str(err) else ''})") from err
    return saved, state, rng


def load_checkpoint(checkpoint: Path, accelerator: Accelerator, model: SeViLA, config: TrainConfig, optimizer,
                    scheduler, data: str | None = None) -> Position:
    """Restore everything `save_checkpoint` wrote. Refused (ValueError) if the config differs except for
    `RESUMABLE_CHANGES`, the process count differs, or the data differ from the run's (`data_fingerprint`);
    `UnreadableCheckpoint` if a file of it cannot be read (nothing is restored then)."""
    saved, state, rng = _read(checkpoint, accelerator)
    changed = {k for k, v in asdict(config).items() if saved["config"].get(k) != v} - RESUMABLE_CHANGES
    if changed:
        raise ValueError(f"cannot resume {checkpoint}: config differs in {sorted(changed)}")
    if saved["processes"] != accelerator.num_processes:
        raise ValueError(f"cannot resume {checkpoint} bit for bit: written by {saved['processes']} processes, "
                         f"now {accelerator.num_processes}")
    if data is not None and saved.get("data") is not None and saved["data"] != data:
        raise ValueError(f"cannot resume {checkpoint}: the run started on other data ({saved['data']}; now "
                         f"{data}): resume with the same questions in the same order, or start a new run in "
                         f"another output_dir")
    if data is not None and saved.get("data") is None:
        warnings.warn(f"{checkpoint} records no data fingerprint (written by an older version): cannot check that "
                      f"the run resumes on the same data", stacklevel=2)
    load_bridges(model, checkpoint)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    _set_rng_state(rng)
    return Position(**state["position"])


def resume_checkpoint(output_dir: str | os.PathLike, accelerator: Accelerator, model: SeViLA, config: TrainConfig,
                      optimizer, scheduler, data: str | None = None) -> tuple[Path | None, Position]:
    """Restore the newest readable checkpoint of `output_dir` (`checkpoint_candidates` order): an unreadable one is
    skipped with a warning naming it; a refusal (other recipe or data) is raised, never skipped. (None, start)
    when there is none to resume."""
    for checkpoint in checkpoint_candidates(output_dir):
        try:
            return checkpoint, load_checkpoint(checkpoint, accelerator, model, config, optimizer, scheduler, data)
        except UnreadableCheckpoint as err:
            warnings.warn(f"{err}; skipped, resuming from an older checkpoint if one is intact", stacklevel=2)
            accelerator.print(f"skipped {err}")
    return None, Position()
