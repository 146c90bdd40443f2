"""The data path: clips from the Zarr store to the device, P x K batches, augmentation.

Two ways to get raw clips to the device, one augmentation for both:

- ``ZarrClips`` + ``make_loader``: a map-style Dataset whose DataLoader workers read Zarr in
  parallel (each worker opens sequences lazily and keeps an LRU of decoded ones), pinned
  memory, persistent workers. Raw clips travel as uint8 (gray) / float16 (flow), the
  smallest form, and become float on the device.
- ``ResidentClips``: every sequence of the split loaded once into one device tensor per
  modality; a batch is a gather by index arithmetic, so no worker, copy or decode sits between
  the optimiser steps. For CASIA-B at 64 x 64 this is a few GB of gray and ~4x that of flow.

``augment`` then turns raw clips into the network input (B, C, T, H, W) on whatever device
they are: the crops are brought to ``input_size`` by ``gaittools.deploy.net_input.fit_to_input`` (a
centre cut when smaller: the same rule deployment applies), then per-clip shift, zoom and
horizontal flip in ONE ``grid_sample``; gray scaled to x/255 - 0.5, flow multiplied by
``flow_scale`` and by the zoom (a magnified image has magnified displacements), dx negated
where flipped.

Batches are a pure function of (seed, step) -- the sampler and the augmentation draw from
generators seeded by both -- so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from gaittools.deploy.net_input import fit_to_input, normalise_gray
from gaittools.store.zarr_store import Store
from training.clips import LENGTH

GRAY, FLOW = "gray", "flow"
#: Store arrays a gray-modality model can read (``data.gray_array``): gray crops, or the
#: silhouettes extract-frames stores as ``sil`` (the field's silhouette baseline).
GRAY_ARRAYS = ("gray", "sil")


def stored_array(modality: str, gray_array: str = GRAY) -> str:
    """The store array that feeds a model of ``modality``: ``flow``, or ``gray_array``."""
    return FLOW if modality == FLOW else gray_array


def _missing(array: str) -> str:
    """What to run for an array a sequence lacks."""
    if array == FLOW:
        return "run compute-flow"
    if array == "sil":
        return "re-run extract-frames with --overwrite: stores made before silhouettes were stored lack sil"
    return "run extract-frames"
#: Shift limits in the method are given for 60-px inputs.
REFERENCE_SIZE = 60


# ---------------------------------------------------------------------------- sampling
class PKBatchSampler(Sampler[list[int]]):
    """P subjects x K clips per step; step ``s``'s batch depends only on (seed, s).

    Under DDP every rank draws the same global batch and keeps subjects ``rank::world``, which
    is what DistributedSampler does for plain indices: together the ranks see P x K clips,
    each rank P/world x K (whole subjects, so every rank still has positives for triplets).
    Subjects are drawn without replacement when there are at least P, clips without
    replacement when a subject has at least K.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, P: int, K: int, seed: int,
                 start_step: int = 0, stop_step: int | None = None, rank: int = 0, world: int = 1):
        labels = np.asarray(labels)
        if P % world:
            raise ValueError(f"P={P} must be divisible by the number of processes ({world})")
        self.by_subject = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        if len(self.by_subject) < 2:
            raise ValueError("P x K sampling needs clips of at least two subjects")
        self.P, self.K, self.seed = P, K, seed
        self.start_step, self.stop_step = start_step, stop_step
        self.rank, self.world = rank, world

    def batch(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.seed, step, 0x5A])
        n = len(self.by_subject)
        subjects = rng.choice(n, self.P, replace=self.P > n)
        out: list[int] = []
        for i, s in enumerate(subjects):
            clips = self.by_subject[s]
            pick = rng.choice(clips, self.K, replace=self.K > len(clips))
            if i % self.world == self.rank:
                out.extend(int(c) for c in pick)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.stop_step is None or step < self.stop_step:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.stop_step is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.stop_step - self.start_step)


class SequentialBatches(Sampler[list[int]]):
    """Every clip once, in order, in batches (signatures and embeddings)."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, self.n, self.batch_size):
            yield list(range(i, min(self.n, i + self.batch_size)))

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


# ---------------------------------------------------------------------------- sources
def crop_size(store_path: str, seq_id: str, modality: str) -> int:
    """The side S of a sequence's stored crops (gray, sil and flow share it); ``modality``
    may name the array itself (``stored_array``)."""
    group = Store(store_path).group(seq_id)
    if modality not in group:
        raise KeyError(f"{store_path}: sequence {seq_id} has no {modality} ({_missing(modality)})")
    return int(group[modality].shape[-1])


@dataclass
class RawBatch:
    """Raw clips of one batch: ``x`` uint8 (B, L, S, S) or float16 (B, L, 2, S, S)."""

    x: torch.Tensor
    clip: torch.Tensor  # (B,) int64 rows of the clip table
    label: torch.Tensor  # (B,) int64

    def pin_memory(self) -> RawBatch:
        """Called by DataLoader(pin_memory=True) in its pinning thread (custom batch types
        are otherwise passed through unpinned, and the host->device copy cannot overlap)."""
        return RawBatch(self.x.pin_memory(), self.clip.pin_memory(), self.label.pin_memory())

    def to(self, device: torch.device | str) -> RawBatch:
        nb = torch.device(device).type == "cuda"
        return RawBatch(self.x.to(device, non_blocking=nb), self.clip.to(device, non_blocking=nb),
                        self.label.to(device, non_blocking=nb))


class ZarrClips(Dataset):
    """Clips read from the store; each worker process keeps its own LRU of decoded sequences."""

    def __init__(self, store_path: str, clips: pd.DataFrame, modality: str, clip_len: int,
                 cache_sequences: int = 64, gray_array: str = GRAY):
        if modality not in (GRAY, FLOW):
            raise ValueError(f"modality must be gray or flow, not {modality!r}")
        if gray_array not in GRAY_ARRAYS:
            raise ValueError(f"gray_array must be one of {GRAY_ARRAYS}, not {gray_array!r}")
        self.array = stored_array(modality, gray_array)
        self.store_path = str(store_path)
        self.seq_ids = clips["seq_id"].to_numpy()
        self.starts = clips["start"].to_numpy()
        self.labels = clips["label"].to_numpy()
        # looped short sequences (training.clips) hold fewer frames than clip_len
        self.lengths = (clips[LENGTH].to_numpy() if LENGTH in clips.columns
                        else np.full(len(clips), clip_len))
        self.modality, self.clip_len = modality, clip_len
        self.cache_sequences = cache_sequences
        self._store: Store | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.seq_ids)

    def sequence(self, seq_id: str) -> np.ndarray:
        if seq_id in self._cache:
            self._cache.move_to_end(seq_id)
            return self._cache[seq_id]
        if self._store is None:  # opened in the worker, not pickled from the parent
            self._store = Store(self.store_path)
        try:
            arr = self._store.read(seq_id, self.array)
        except KeyError as exc:
            raise KeyError(f"{self.store_path}: sequence {seq_id} has no {self.array} "
                           f"({_missing(self.array)})") from exc
        self._cache[seq_id] = arr
        while len(self._cache) > self.cache_sequences:
            self._cache.popitem(last=False)
        return arr

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        seq = self.sequence(self.seq_ids[i])
        t, length = int(self.starts[i]), int(self.lengths[i])
        if length < self.clip_len:
            if len(seq) == 0:  # a one-frame walk has no flow field: no motion seen, zero flow
                return np.zeros((self.clip_len, *seq.shape[1:]), seq.dtype), i, int(self.labels[i])
            frames = np.minimum(t + np.arange(self.clip_len) % length, len(seq) - 1)
            return np.ascontiguousarray(seq[frames]), i, int(self.labels[i])
        clip = seq[t:t + self.clip_len]
        if len(clip) != self.clip_len:
            raise ValueError(f"{self.store_path}: {self.seq_ids[i]} has {len(seq)} {self.modality} "
                             f"frames, too few for a clip at {t} of {self.clip_len}")
        return np.ascontiguousarray(clip), i, int(self.labels[i])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"], state["_cache"] = None, OrderedDict()
        return state


def _collate(items: list[tuple[np.ndarray, int, int]]) -> RawBatch:
    x = torch.from_numpy(np.stack([it[0] for it in items]))
    clip = torch.tensor([it[1] for it in items], dtype=torch.int64)
    label = torch.tensor([it[2] for it in items], dtype=torch.int64)
    return RawBatch(x, clip, label)


def make_loader(dataset: ZarrClips, batch_sampler: Sampler[list[int]], workers: int,
                pin_memory: bool, persistent: bool = True) -> DataLoader:
    """Workers read Zarr in parallel; batches are prefetched while the device computes.

    The loader gets its own generator: by default each new iterator draws its worker seed
    from the global RNG, which would shift the dropout stream of a resumed run by one draw.
    """
    return DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=_collate,
        pin_memory=pin_memory, persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(0),
    )


class ResidentClips:
    """All sequences of a clip table in one device tensor; batches cut by index arithmetic."""

    def __init__(self, store_path: str, clips: pd.DataFrame, modality: str, clip_len: int,
                 device: torch.device | str, gray_array: str = GRAY):
        store = Store(store_path)
        modality = stored_array(modality, gray_array)
        seq_ids = list(dict.fromkeys(clips["seq_id"]))
        arrays, offsets, total = [], {}, 0
        for seq_id in seq_ids:
            arr = store.read(seq_id, modality)
            offsets[seq_id] = total
            total += len(arr)
            arrays.append(torch.from_numpy(arr))
        self.data = torch.cat(arrays).to(device)
        self.device = torch.device(device)
        base = clips["seq_id"].map(offsets).to_numpy() + clips["start"].to_numpy()
        self.first = torch.tensor(base, dtype=torch.int64, device=device)
        self.labels = torch.tensor(clips["label"].to_numpy(), dtype=torch.int64, device=device)
        self.span = torch.arange(clip_len, device=device)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> RawBatch:
        idx = torch.as_tensor(indices, dtype=torch.int64).to(self.device)
        frames = self.first[idx, None] + self.span  # (B, L)
        return RawBatch(self.data[frames], idx, self.labels[idx])

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def iterate_batches(source: DataLoader | ResidentClips, sampler: Sampler[list[int]],
                    device: torch.device) -> Iterator[RawBatch]:
    """Raw batches on ``device`` from either source, in the sampler's order."""
    if isinstance(source, ResidentClips):
        for indices in sampler:
            yield source.batch(indices)
    else:
        for batch in source:
            yield batch.to(device)


# ---------------------------------------------------------------------------- augmentation
@dataclass
class AugmentParams:
    """Per-clip geometric augmentation: ``flip`` bool (B,), shift (B, 2) px, zoom (B,)."""

    flip: torch.Tensor
    shift: torch.Tensor
    zoom: torch.Tensor

    @classmethod
    def identity(cls, batch: int, flip: bool = False) -> AugmentParams:
        return cls(torch.full((batch,), flip), torch.zeros(batch, 2), torch.ones(batch))

    @classmethod
    def draw(cls, batch: int, seed: int, step: int, shift_px: float, zoom: float, flip: bool,
             input_size: int) -> AugmentParams:
        """Random parameters for training step ``step`` (CPU generator: same on every device)."""
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 0xA6]).generate_state(1)[0]))
        max_shift = shift_px * input_size / REFERENCE_SIZE
        flips = torch.rand(batch, generator=gen) < 0.5 if flip else torch.zeros(batch, dtype=torch.bool)
        shift = (torch.rand(batch, 2, generator=gen) * 2 - 1) * max_shift
        zooms = 1 + (torch.rand(batch, generator=gen) * 2 - 1) * zoom
        return cls(flips, shift, zooms)


def augment(raw: torch.Tensor, params: AugmentParams, input_size: int, flow_scale: float) -> torch.Tensor:
    """Raw clips -> network input (B, C, T, H, W) float32 on ``raw``'s device.

    ``raw``: uint8 gray (B, L, S, S) or float16 flow (B, L, 2, S, S). The crops are first fitted
    to ``input_size`` (``fit_to_input``: the rule deployment shares); with identity parameters
    that is all, so evaluation embeds exactly what ``gaittools identify`` feeds the network.
    The affine map per clip is output -> input coords ``x_in = sx * x_out / zoom + tx``
    (sx = -1 when flipped), in the normalised [-1, 1] frame with ``align_corners=False``, so a
    pure flip is an exact mirror.
    """
    device = raw.device
    flow = raw.dim() == 5
    B, L = raw.shape[:2]
    x = fit_to_input(raw, input_size, flow=flow).float()
    channels = 2 if flow else 1
    planes = x.reshape(B, L * channels, input_size, input_size)
    # decided on the (CPU) parameters, so a GPU step does not wait for a device->host copy
    identity = (not bool(params.flip.any()) and bool((params.zoom == 1).all())
                and bool((params.shift == 0).all()))
    zoom = params.zoom.to(device).float()
    flip = params.flip.to(device)
    sign = torch.where(flip, -1.0, 1.0).to(device)
    shift = params.shift.to(device).float() * (2.0 / input_size)  # px of the output -> normalised
    theta = torch.zeros(B, 2, 3, device=device)
    theta[:, 0, 0] = sign / zoom
    theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = -shift / zoom[:, None]
    if not identity:
        grid = F.affine_grid(theta, [B, L * channels, input_size, input_size], align_corners=False)
        planes = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if flow:
        out = planes.reshape(B, L, 2, input_size, input_size)
        magnify = zoom * flow_scale  # displacements grow with the image (a resize is in fit_to_input)
        dx = out[:, :, 0] * (magnify * sign)[:, None, None, None]
        dy = out[:, :, 1] * magnify[:, None, None, None]
        return torch.stack([dx, dy], dim=1)  # (B, 2, L, H, W)
    return normalise_gray(planes).reshape(B, 1, L, input_size, input_size)
