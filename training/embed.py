"""Clip embeddings of whole sequences: what signatures and evaluation are computed from.

One pass over a clip table in order, no augmentation except an optional mirror (the flipped
clips whose master signatures are the targets of flipped student inputs), in eval mode,
without gradients. Reads through the same DataLoader as training, so Zarr decoding runs in
parallel workers while the model computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gaittools.cli.progress import Meter
from gaittools.store.zarr_store import Store
from training.clips import LENGTH
from training.data import (AugmentParams, SequentialBatches, ZarrClips, augment, crop_size, make_loader,
                           stored_array)
from training.trainer import autocast_enabled, is_3d
from training.walks import is_walk_table, read_walk


@dataclass
class EmbedSettings:
    """How the model was trained to see clips: the data path must feed it the same way."""

    store: str
    clip_len: int
    input_size: int | None
    flow_scale: float
    batch_size: int = 64
    workers: int = 0
    amp: bool = True
    channels_last: bool = True
    gray_array: str = "gray"  # data.gray_array: the store array gray models read


@torch.no_grad()
def embed_clips(model: nn.Module, clips: pd.DataFrame, modality: str, settings: EmbedSettings,
                device: torch.device, flip: bool = False, normalise: bool = True,
                progress: str | None = None) -> torch.Tensor:
    """(N, d) float32 CPU embeddings of the table's clips, in its row order."""
    if clips.empty:
        return torch.zeros(0, getattr(model, "embedding_dim", 0))
    size = crop_size(settings.store, clips["seq_id"].iloc[0], stored_array(modality, settings.gray_array))
    input_size = settings.input_size or size
    dataset = ZarrClips(settings.store, clips, modality, settings.clip_len, gray_array=settings.gray_array)
    sampler = SequentialBatches(len(clips), settings.batch_size)
    loader = make_loader(dataset, sampler, settings.workers, pin_memory=device.type == "cuda", persistent=False)
    channels_last = settings.channels_last and is_3d(model)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    meter, done = Meter(len(clips)), 0
    for raw in loader:
        raw = raw.to(device)
        x = augment(raw.x, AugmentParams.identity(len(raw.clip), flip), input_size, settings.flow_scale)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_enabled(device, settings.amp)):
            emb = model(x)["embedding"].float()
        out.append((F.normalize(emb, dim=1) if normalise else emb).cpu())
        done += len(raw.clip)
        if progress and (len(out) % 20 == 0 or done == len(clips)):
            meter.update(done)
            print(f"{progress}: {done}/{len(clips)} clips, {meter.rate:.0f} clips/s, ETA {meter.eta()}", flush=True)
    model.train(was_training)
    return torch.cat(out)


def embed_table(model: nn.Module, table: pd.DataFrame, modality: str, settings: EmbedSettings,
                device: torch.device, flip: bool = False, normalise: bool = True,
                progress: str | None = None) -> torch.Tensor:
    """Embeddings of a clip table or of a walk table (``training.walks``), in its row order."""
    embed = embed_walks if is_walk_table(table) else embed_clips
    return embed(model, table, modality, settings, device, flip=flip, normalise=normalise, progress=progress)


@torch.no_grad()
def embed_walks(model: nn.Module, walks: pd.DataFrame, modality: str, settings: EmbedSettings,
                device: torch.device, flip: bool = False, normalise: bool = True,
                progress: str | None = None, max_frames: int = 2048) -> torch.Tensor:
    """(N, d) float32 CPU embeddings of whole walks: every frame of a walk is one set.

    Walks of similar length go through together: each walk's frames are repeated up to the
    longest of its batch, which leaves its set maximum -- and so its signature -- unchanged
    (tested), while the network sees a few large batches instead of many small ones.
    ``max_frames`` bounds the frames of one batch (memory), not of a walk."""
    if walks.empty:
        return torch.zeros(0, getattr(model, "embedding_dim", 0))
    store = Store(settings.store)
    size = crop_size(settings.store, walks["seq_id"].iloc[0], stored_array(modality, settings.gray_array))
    input_size = settings.input_size or size
    order = np.argsort(walks[LENGTH].to_numpy(), kind="stable")
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    out = torch.zeros(len(walks), getattr(model, "embedding_dim", 0))
    meter, done = Meter(len(walks)), 0
    for group in _length_groups(walks[LENGTH].to_numpy()[order], max_frames):
        rows = order[group]
        sets = [read_walk(store, walks.iloc[i], modality, settings.gray_array) for i in rows]
        longest = max(len(s) for s in sets)
        raw = torch.from_numpy(np.stack([np.resize(s, (longest, *s.shape[1:])) for s in sets])).to(device)
        x = augment(raw, AugmentParams.identity(len(rows), flip), input_size, settings.flow_scale)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_enabled(device, settings.amp)):
            emb = model(x)["embedding"].float()
        out[torch.as_tensor(rows)] = (F.normalize(emb, dim=1) if normalise else emb).cpu()
        done += len(rows)
        if progress:
            meter.update(done)
            print(f"{progress}: {done}/{len(walks)} walks, {meter.rate:.1f} walks/s, ETA {meter.eta()}", flush=True)
    model.train(was_training)
    return out


def _length_groups(sorted_lengths: np.ndarray, max_frames: int) -> list[np.ndarray]:
    """Consecutive positions of length-sorted walks, each group's (count x longest) <= max_frames."""
    groups, start = [], 0
    for end in range(1, len(sorted_lengths) + 1):
        longest = max(int(sorted_lengths[end - 1]), 1)
        if end - start > 1 and (end - start) * longest > max_frames:
            groups.append(np.arange(start, end - 1))
            start = end - 1
    groups.append(np.arange(start, len(sorted_lengths)))
    return groups


def settings_from(cfg: Any, workers: int | None = None) -> EmbedSettings:
    """Embedding settings of a run's config (``training.config.Config``)."""
    return EmbedSettings(cfg.data.store, cfg.data.clip_len, cfg.data.input_size, cfg.data.flow_scale,
                         cfg.eval.batch_size, cfg.data.workers if workers is None else workers, cfg.train.amp,
                         cfg.train.channels_last, gray_array=cfg.data.gray_array)
