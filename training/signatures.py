"""The frozen master's signatures: the targets the students copy.

Computed once after master training, for every training clip (or whole walk, for set
networks: the student that sees 30 frames of a walk copies the master's signature of the
whole walk) and for its mirror (flipped
horizontally, dx negated): a student that sees a flipped gray clip is asked for the master's
signature of the flipped flow clip, not of the original, because a mirrored walk is a
different (mirrored) motion.

File ``RUN/signatures.pt``::

    {"clip_ids": [str] N, "signatures": float16 (N, 2, d) (index 1 = mirrored clip),
     "clip_len", "step", "flow_scale", "master_model"}

L2-normalised, stored as float16: components of a unit vector in d = 1024..2048 are ~0.03,
where float16 keeps ~1e-5 absolute precision, far below what copy losses resolve, at half
the size (CASIA-B: ~120 k clips x 2 x 2048 -> 1 GB instead of 2 GB).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from training.data import FLOW
from training.embed import EmbedSettings, embed_table

FILE = "signatures.pt"


def compute_signatures(master: nn.Module, clips: pd.DataFrame, settings: EmbedSettings,
                       device: torch.device, rank: int = 0, world: int = 1) -> torch.Tensor:
    """(N, 2, d) normalised signatures of the clips and their mirrors; the master is frozen.

    Under DDP (``world`` > 1, process group initialised) every rank embeds one contiguous
    share of the clips and the shares are gathered in rank order, so all GPUs work instead of
    rank 0 alone; every rank returns the whole table."""
    master.eval()
    for p in master.parameters():
        p.requires_grad_(False)
    share = clips.iloc[_shard(len(clips), rank, world)]
    tag = f" [rank {rank}/{world}]" if world > 1 else ""
    plain = embed_table(master, share, FLOW, settings, device, flip=False, progress=f"signatures{tag}")
    mirrored = embed_table(master, share, FLOW, settings, device, flip=True,
                           progress=f"signatures (mirrored){tag}")
    mine = torch.stack([plain, mirrored], dim=1)
    if world == 1:
        return mine
    import torch.distributed as dist

    shares: list[Any] = [None] * world
    dist.all_gather_object(shares, mine.cpu())
    return torch.cat(shares)


def _shard(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous share of n rows (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def save_signatures(run_path: str | os.PathLike[str], clips: pd.DataFrame, signatures: torch.Tensor,
                    meta: dict[str, Any]) -> Path:
    path = Path(run_path) / FILE
    tmp = path.with_name(f".{FILE}.{uuid.uuid4().hex[:8]}.tmp")
    torch.save({"clip_ids": list(clips["clip_id"]), "signatures": signatures.half(), **meta}, tmp)
    os.replace(tmp, path)
    return path


class SignatureTable:
    """Signatures looked up by the rows of a (student's) clip table, kept on one device."""

    def __init__(self, run_path: str | os.PathLike[str], clips: pd.DataFrame, device: torch.device | str,
                 centre: bool = False):
        """``centre``: subtract the mean signature of all the student's clips (and mirrors),
        then re-normalise. Why: a master's signatures share a large common direction (mean
        pairwise cosine 0.6 on CASIA-B), which a cosine copy loss rewards first, so a student
        can score well by learning the average; centred targets keep only what tells clips
        apart, and cosine retrieval in the centred space ranks as well or better."""
        path = Path(run_path) / FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no master signatures (train the master with `train-copy master`)")
        saved = torch.load(path, map_location="cpu", weights_only=False)
        row_of = {cid: i for i, cid in enumerate(saved["clip_ids"])}
        missing = [cid for cid in clips["clip_id"] if cid not in row_of]
        if missing:
            raise ValueError(f"{path}: no signature for {len(missing)} of the student's clips "
                             f"(e.g. {missing[0]}); the student must use the master's store, split, "
                             "clip_len and step")
        rows = torch.tensor([row_of[cid] for cid in clips["clip_id"]], dtype=torch.int64)
        signatures = saved["signatures"][rows].float()  # (N, 2, d)
        if centre:
            signatures = F.normalize(signatures - signatures.mean(dim=(0, 1)), dim=-1)
        self.signatures = signatures.to(device)
        self.meta = {k: v for k, v in saved.items() if k not in ("clip_ids", "signatures")}

    @property
    def dim(self) -> int:
        return int(self.signatures.shape[-1])

    def targets(self, clip_rows: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """(B, d) targets for clip-table rows, the mirror's where ``flipped``."""
        device = self.signatures.device
        return self.signatures[clip_rows.to(device), flipped.to(device).long()]
