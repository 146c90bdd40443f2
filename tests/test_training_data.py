"""train-copy's data path: config validation, clip index, P x K sampling, augmentation, sources."""

import numpy as np
import pandas as pd
import pytest
import torch

from gaittools.store.zarr_store import Store
from training.clips import build_clip_index, clip_starts, read_split
from training.config import ConfigError, config_from_dict, load_config
from training.data import (AugmentParams, PKBatchSampler, ResidentClips, SequentialBatches, ZarrClips, augment,
                           make_loader)


def person_span(store: Store, seq_id: str) -> tuple[int, int]:
    """First and last frame with a person window (the toy store has one unbroken run)."""
    valid = np.flatnonzero(np.isfinite(store.read(seq_id, "windows")).all(axis=1))
    assert len(valid) and (np.diff(valid) == 1).all()
    return int(valid[0]), int(valid[-1])


# ---------------------------------------------------------------------------- config
def test_unknown_key_is_an_error_naming_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  clip_len: 25\n  stpe: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*data\.stpe"):
        load_config(path)
    path.write_text("trian:\n  steps: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key trian"):
        load_config(path)


def test_config_types_ranges_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="data.P must be an integer"):
        config_from_dict({"data": {"P": "eight"}}, "x.yaml")
    with pytest.raises(ConfigError, match="loss.copy must be one of"):
        config_from_dict({"loss": {"copy": "l3"}}, "x.yaml")
    with pytest.raises(ConfigError, match="ckpt_every must be a multiple of log_every"):
        config_from_dict({"train": {"log_every": 10, "ckpt_every": 25}}, "x.yaml")
    with pytest.raises(ConfigError, match="steps or epochs, not both"):
        config_from_dict({"train": {"steps": 3, "epochs": 2}}, "x.yaml")
    cfg = config_from_dict({"optim": {"lr": 1}}, "x.yaml", ["train.steps=7", "master.options={widths: [1, 2]}"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.train.steps == 7 and cfg.master.options == {"widths": [1, 2]}
    assert cfg.data.clip_len == 25 and cfg.data.step == 5  # the method's defaults
    with pytest.raises(ConfigError, match=r"^--set train\.stepz: unknown key train.stepz") as info:
        config_from_dict({}, "x.yaml", ["train.stepz=7"])
    assert "x.yaml" not in str(info.value)  # the typo is the override's, not the file's
    with pytest.raises(ConfigError, match=r"^--set data\.P: data\.P must be an integer"):
        config_from_dict({"data": {"P": 4}}, "x.yaml", ["data.P=eight"])
    with pytest.raises(ConfigError, match=r"^x\.yaml: data\.K must be an integer"):
        config_from_dict({"data": {"K": "four"}}, "x.yaml", ["data.P=8"])


def test_retired_keys_still_load():
    cfg = config_from_dict({"data": {"eval_batch": 32, "P": 4}, "eval": {"protocols": ["auto"], "k": 3}}, "old.yaml")
    assert cfg.data.P == 4 and cfg.eval.k == 3
    assert "eval_batch" not in cfg.to_dict()["data"] and "protocols" not in cfg.to_dict()["eval"]


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


# ---------------------------------------------------------------------------- clips
def test_clip_starts_need_l_plus_one_valid_frames():
    valid = np.ones(40, bool)
    valid[:2] = False
    # frames 2..39 valid; a clip at s needs s..s+25 valid -> s <= 14
    assert clip_starts(valid, 25, 5) == [2, 7, 12]
    valid[20] = False  # runs 2..19 and 21..39: neither holds 26 frames
    assert clip_starts(valid, 25, 5) == []
    assert clip_starts(np.ones(26, bool), 25, 5) == [0]  # 26 frames: 25 gray + 25 flow fields
    assert clip_starts(np.ones(25, bool), 25, 5) == []


def test_clip_index_from_store_and_split(toy):
    store, split_dir = toy.store, toy.split
    split = read_split(split_dir)
    clips = build_clip_index(store, split, clip_len=25, step=3)
    # a start s needs frames s..s+25 with a person (25 gray frames + 25 flow fields)
    first, last = person_span(store, "001-nm-01-090")
    assert first > 0, "the toy store's walks start with frames where nobody was found"
    assert sorted(clips[clips.seq_id == "001-nm-01-090"].start) == list(range(first, last - 25 + 1, 3))
    assert list(clips["clip"]) == list(range(len(clips)))
    assert clips.clip_id.is_unique and clips.clip_id.iloc[0] == f"{clips.seq_id.iloc[0]}:{first}"
    train = split[split.role == "train"]
    assert set(clips.seq_id) == set(train.seq_id)  # training rows only, every one long enough
    assert sorted(clips.label.unique()) == list(range(train.subject.nunique()))
    again = build_clip_index(store, split, clip_len=25, step=3)
    pd.testing.assert_frame_equal(clips, again)  # stable ids
    # every clip's frames are person frames, and its flow clip exists
    for rec in clips.itertuples():
        gray = store.read(rec.seq_id, "gray")[rec.start:rec.start + 25]
        flow = store.read(rec.seq_id, "flow")[rec.start:rec.start + 25]
        assert gray.reshape(25, -1).any(axis=1).all() and len(flow) == 25


# ---------------------------------------------------------------------------- sampling
def test_pk_sampler_balanced_deterministic_and_sharded():
    labels = np.repeat(np.arange(6), [5, 5, 5, 5, 5, 2])
    sampler = PKBatchSampler(labels, P=4, K=3, seed=1)
    batch = sampler.batch(10)
    assert len(batch) == 12
    counts = np.bincount(labels[batch], minlength=6)
    assert sorted(counts[counts > 0]) == [3, 3, 3, 3]
    assert sampler.batch(10) == batch and sampler.batch(11) != batch
    per_subject = [np.asarray(batch[i:i + 3]) for i in range(0, 12, 3)]
    for group in per_subject:
        if len(set(labels[group])) == 1 and labels[group[0]] != 5:
            assert len(set(group)) == 3  # without replacement when a subject has >= K clips
    halves = [PKBatchSampler(labels, 4, 3, seed=1, rank=r, world=2).batch(10) for r in range(2)]
    assert sorted(halves[0] + halves[1]) == sorted(batch) and len(halves[0]) == 6
    resumed = list(PKBatchSampler(labels, 4, 3, seed=1, start_step=10, stop_step=12))
    assert resumed[0] == batch and len(resumed) == 2
    with pytest.raises(ValueError, match="divisible"):
        PKBatchSampler(labels, 4, 3, seed=1, rank=0, world=3)


# ---------------------------------------------------------------------------- augmentation
def test_flip_mirrors_pixels_and_negates_dx():
    g = torch.Generator().manual_seed(0)
    flow = (torch.randn(3, 5, 2, 16, 16, generator=g) * 3).half()
    out = augment(flow, AugmentParams.identity(3, flip=True), 16, flow_scale=0.5)
    plain = augment(flow, AugmentParams.identity(3, flip=False), 16, flow_scale=0.5)
    assert out.shape == (3, 2, 5, 16, 16)
    torch.testing.assert_close(plain, flow.float().permute(0, 2, 1, 3, 4) * 0.5)
    torch.testing.assert_close(out[:, 0], -plain[:, 0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], plain[:, 1].flip(-1), atol=1e-5, rtol=0)
    gray = torch.randint(0, 256, (2, 4, 16, 16), dtype=torch.uint8)
    flipped = augment(gray, AugmentParams.identity(2, flip=True), 16, 1.0)
    torch.testing.assert_close(flipped[:, 0], (gray.float() / 255 - 0.5).flip(-1))


def test_shift_and_zoom_move_content_and_scale_flow():
    gray = torch.zeros(1, 2, 60, 60, dtype=torch.uint8)
    gray[..., 28:32, 28:32] = 255
    shift = AugmentParams(torch.tensor([False]), torch.tensor([[5.0, 0.0]]), torch.ones(1))
    moved = augment(gray, shift, 60, 1.0)[0, 0, 0] + 0.5
    cols = torch.nonzero(moved.sum(0) > 1).flatten()
    assert cols.min().item() == 33 and cols.max().item() == 36  # 5 px right
    flow = torch.ones(1, 2, 2, 60, 60, dtype=torch.float16)
    zoomed = augment(flow, AugmentParams(torch.tensor([False]), torch.zeros(1, 2), torch.tensor([1.04])), 60, 1.0)
    assert abs(zoomed[0, 0, 0, 30, 30].item() - 1.04) < 1e-4  # displacements grow with the image
    cut = augment(flow, AugmentParams.identity(1), 30, 1.0)  # a centre cut keeps the pixel scale
    assert cut.shape[-1] == 30 and abs(cut[0, 1, 0, 15, 15].item() - 1.0) < 1e-4
    enlarged = augment(flow, AugmentParams.identity(1), 90, 1.0)  # a resize scales displacements
    assert enlarged.shape[-1] == 90 and abs(enlarged[0, 1, 0, 45, 45].item() - 1.5) < 1e-4
    params = AugmentParams.draw(64, seed=3, step=9, shift_px=5, zoom=0.04, flip=True, input_size=60)
    assert params.shift.abs().max() <= 5 and (params.zoom - 1).abs().max() <= 0.04
    assert 10 < params.flip.sum() < 54
    again = AugmentParams.draw(64, seed=3, step=9, shift_px=5, zoom=0.04, flip=True, input_size=60)
    assert torch.equal(params.shift, again.shift) and torch.equal(params.flip, again.flip)


# ---------------------------------------------------------------------------- sources
def test_zarr_loader_and_resident_source_give_the_same_clips(toy):
    store, split_dir = toy.store, toy.split
    clips = build_clip_index(store, read_split(split_dir), clip_len=25, step=3)
    for modality in ("gray", "flow"):
        loader = make_loader(ZarrClips(str(store.path), clips, modality, 25), SequentialBatches(len(clips), 4),
                             workers=1, pin_memory=False, persistent=False)
        resident = ResidentClips(str(store.path), clips, modality, 25, "cpu")
        for batch in loader:
            other = resident.batch(batch.clip)
            assert torch.equal(batch.x, other.x) and torch.equal(batch.label, other.label)
        rec = clips.iloc[-1]
        np.testing.assert_array_equal(resident.batch([len(clips) - 1]).x[0].numpy(),
                                      Store(store.path).read(rec.seq_id, modality)[rec.start:rec.start + 25])


def test_short_sequences_are_embedded_as_one_looped_clip(toy):
    """Evaluation counts every probe: a sequence shorter than a clip loops its valid frames."""
    store, split_dir = toy.store, toy.split
    split = read_split(split_dir).assign(role="probe")
    first, last = person_span(store, split.seq_id.iloc[0])
    long_clip = last - first + 10  # longer than the person frames: no ordinary clip fits
    assert build_clip_index(store, split, clip_len=long_clip, step=5, roles=("probe",)).empty
    clips = build_clip_index(store, split, clip_len=long_clip, step=5, roles=("probe",), labels={},
                             loop_short=True)
    assert sorted(clips["seq_id"]) == sorted(split["seq_id"])  # one clip per sequence
    # the person frames first..last give last - first flow fields: the looped span
    assert (clips["start"] == first).all() and (clips["length"] == last - first).all()
    ordinary = build_clip_index(store, split, clip_len=25, step=5, roles=("probe",), labels={},
                                loop_short=True)
    assert (ordinary["length"] == 25).all() and len(ordinary) > len(split)  # long ones: unchanged
    n = last - first
    for modality in ("gray", "flow"):
        seq = store.read(clips.seq_id.iloc[0], modality)
        clip, _, _ = ZarrClips(str(store.path), clips, modality, long_clip)[0]
        assert clip.shape[0] == long_clip
        np.testing.assert_array_equal(clip[:n], seq[first:last])
        np.testing.assert_array_equal(clip[n:], seq[first:first + long_clip - n])  # looped, not padded
