"""Training checkpoints that resume bit for bit: the trained bridge (safetensors), optimiser, scheduler and scaler
state, the data position and every process's RNG state, written into a temp folder renamed when complete; the
`latest` pointer is written last, so it always names a complete checkpoint."""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from .checkpoints import load_bridges, save_bridges
from .files import atomic_write_text
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
                    position: Position) -> Path:
    """`<output_dir>/checkpoint-<step>/`: the trained bridge (safetensors), optimizer + scheduler + scaler state,
    the data position, and one RNG file per process. Written into a temp dir that is renamed when complete;
    the `latest` pointer is written last."""
    out = Path(config.output_dir)
    final, tmp = out / f"checkpoint-{position.step}", out / f".checkpoint-{position.step}.tmp"
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
            {"position": asdict(position), "processes": accelerator.num_processes, "config": asdict(config)},
            indent=2))
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


def load_checkpoint(checkpoint: Path, accelerator: Accelerator, model: SeViLA, config: TrainConfig, optimizer,
                    scheduler) -> Position:
    """Restore everything `save_checkpoint` wrote; the config must match except for `RESUMABLE_CHANGES`."""
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    changed = {k for k, v in asdict(config).items() if saved["config"].get(k) != v} - RESUMABLE_CHANGES
    if changed:
        raise ValueError(f"cannot resume {checkpoint}: config differs in {sorted(changed)}")
    if saved["processes"] != accelerator.num_processes:
        raise ValueError(f"cannot resume {checkpoint} bit for bit: written by {saved['processes']} processes, "
                         f"now {accelerator.num_processes}")
    load_bridges(model, checkpoint)
    state = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    _set_rng_state(torch.load(checkpoint / f"rng_state_{accelerator.process_index}.pt", weights_only=True))
    return Position(**state["position"])
