"""`ScoringPlan`: how clips become a model's batches, decided once per model and used by every
route that scores (the score CLI, the bench runner, the model server, training validation).

A plan holds the preprocessing contract (what each clip is prepared with: `Preprocess`), the
batch size, the device and bf16 autocast. `batches` puts clips of similar length together
(least padding; models that batch unequal lengths exactly score a clip the same in any batch),
`collate` zero-pads a batch and moves it to the device with its lengths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from audiobase.preprocess import Preprocess


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of `batch_size` clips in length order: similar lengths share a batch (least
    padding), and N clips take ceil(N / batch_size) passes."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    step = max(1, int(batch_size))
    return [order[s : s + step] for s in range(0, len(order), step)]


def pad_waves(wavs: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms [T_i] -> zero-padded batch [B, max T_i] (float32) and lengths [B]."""
    tensors = [torch.as_tensor(w, dtype=torch.float32) for w in wavs]
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
    batch = torch.zeros(len(tensors), int(lengths.max()) if tensors else 0)
    for i, t in enumerate(tensors):
        batch[i, : t.shape[0]] = t
    return batch, lengths


@dataclass(frozen=True)
class ScoringPlan:
    """How one model's inputs are prepared and batched (see the module docstring).

    `preprocess`: the contract every clip goes through; `batch_size`: clips per forward;
    `device`, `bf16`: where the forward runs and whether it autocasts to bfloat16 (CUDA only).
    """

    preprocess: Preprocess
    batch_size: int = 8
    device: str = "cpu"
    bf16: bool = False

    @property
    def sr(self) -> int:
        return self.preprocess.sr

    def replace(self, **changes: Any) -> ScoringPlan:
        """A copy with `changes` (e.g. `batch_size`)."""
        return replace(self, **changes)

    def prepare(self, audio: Any) -> np.ndarray:
        """A path or a waveform at `sr` -> the model input [T] (AudioError names a bad file)."""
        return self.preprocess(audio)

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Index batches of at most `batch_size` clips, similar lengths together."""
        return length_sorted_batches(lengths, self.batch_size)

    def collate(
        self, wavs: Sequence[np.ndarray | torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared waveforms [T_i] -> zero-padded batch [B, T] and lengths [B] on `device`."""
        x, lengths = pad_waves(wavs)
        return x.to(self.device), lengths.to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around a forward when the plan asks for it; a no-op otherwise."""
        device = torch.device(self.device)
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)
