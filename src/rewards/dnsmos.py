"""DNSMOS P.835 (Microsoft) behind the reward-model interface: `model=dnsmos` in bench.

DNSMOS P.835 is a non-intrusive speech-quality model trained on P.835 listening tests: three
MOS on 1-5, SIG (the voice's own distortion), BAK (background noise intrusiveness) and OVRL
(overall). The ONNX network and its polynomial calibration ship inside the `speechmos` package
(0.0.1.1, MIT); they are loaded from the installed package and run with onnxruntime, never
fetched.

Scoring follows `speechmos.dnsmos.run(sample, 16000)` exactly (tested to 1e-4): a clip shorter
than 9.01 s is repeated (doubled) until it is at least that long, then 9.01 s windows every 1 s
are scored and the calibrated MOS averaged. Unlike speechmos, the windows of every clip in a
`score_batch` call are stacked and scored `window_batch` at a time, and audio at any sample
rate or level is accepted: it is resampled to 16 kHz and clipped to [-1, 1] here (speechmos
refuses samples outside that range).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiobase.preprocess import Preprocess
from rewards.base import MUSICALITY, BatchInput, RewardModel, ScoreItemError, as_input
from rewards.optional import require

DNSMOS_SR = 16000
INPUT_LENGTH = 9.01  # seconds per window, as speechmos.dnsmos
INSTALL = "pip install 'speechmos==0.0.1.1' 'onnxruntime>=1.17'  (or: pip install -e '.[weights]')"
MODEL_FILES = {False: "dnsmos_models/sig_bak_ovr.onnx", True: "pdnsmos_models/sig_bak_ovr.onnx"}


def speechmos_dir() -> Path:
    """The installed speechmos package folder (holds the ONNX files)."""
    mod = require("speechmos.dnsmos", "dnsmos", INSTALL)
    return Path(str(mod.__file__)).resolve().parent


def dnsmos_windows(audio: np.ndarray, fs: int = DNSMOS_SR) -> np.ndarray:
    """speechmos's windowing of one clip -> [W, 9.01 s] float32 (W >= 1 for any non-empty clip).

    The same arithmetic as `speechmos.dnsmos.DNSMOS.__call__`, float expressions included, so
    the same windows are scored."""
    if audio.size == 0:
        raise ValueError("empty audio")
    len_samples = int(INPUT_LENGTH * fs)
    while len(audio) < len_samples:
        audio = np.append(audio, audio)
    num_hops = int(np.floor(len(audio) / fs) - INPUT_LENGTH) + 1
    segs = []
    for idx in range(num_hops):
        seg = audio[int(idx * fs) : int((idx + INPUT_LENGTH) * fs)]
        if len(seg) < len_samples:
            continue
        segs.append(seg)
    if not segs:
        raise ValueError("no full 9.01 s window")  # cannot happen after the doubling above
    return np.stack(segs).astype(np.float32)


class DNSMOSRewardModel(RewardModel):
    """DNSMOS P.835: `score_batch` -> [N, 2 + 3]: NaN, OVRL, then OVRL, SIG, BAK.

    Column 1 (musicality) is OVRL; `extra_columns` names columns 2-4. Every value is a MOS on
    roughly 1-5, higher is better.

    Args:
        personalized: the personalized DNSMOS (`pdnsmos_models/`, speechmos's
            `model_type="dnsmos_personalized"`: interfering talkers count as noise).
        max_dur: score the first `max_dur` seconds (None = the whole clip, as speechmos).
        window_batch: 9.01 s windows per onnxruntime call (across clips).
        threads: onnxruntime intra-op threads per call (0 = onnxruntime's default, all cores);
            the benchmark runner already scores several batches at once on CPU.
        device: accepted for the runner's injection; DNSMOS runs on CPU.
    """

    thread_safe = True  # onnxruntime sessions may run concurrently; no state changes
    preprocess: Preprocess  # set in __init__: the model's own contract

    extra_columns = ["ovrl", "sig", "bak"]

    def __init__(
        self,
        personalized: bool = False,
        max_dur: float | None = None,
        window_batch: int = 8,
        threads: int = 1,
        device: str = "cpu",
    ) -> None:
        if window_batch < 1:
            raise ValueError(f"window_batch must be >= 1, got {window_batch}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        ort = require("onnxruntime", "dnsmos", INSTALL)
        self._speechmos = require("speechmos.dnsmos", "dnsmos", INSTALL)
        self.personalized = bool(personalized)
        self.model_path = speechmos_dir() / MODEL_FILES[self.personalized]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.window_batch = int(window_batch)
        self.preprocess = Preprocess(sr=DNSMOS_SR, max_dur=max_dur)

    @property
    def sr(self) -> int:
        return DNSMOS_SR

    def __repr__(self) -> str:
        return f"DNSMOSRewardModel(personalized={self.personalized})"

    def prepare(self, audio: Any) -> np.ndarray:
        """A path or a waveform at 16 kHz -> [T] float32 in [-1, 1] (DNSMOS's input contract)."""
        return np.clip(self.preprocess(audio), -1.0, 1.0)

    def score_batch(
        self,
        inputs: Sequence[BatchInput | Any],
        batch_size: int = 8,
        max_dur: float | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Paths or waveforms at 16 kHz -> [N, 5]: NaN, OVRL, OVRL, SIG, BAK.

        The model's `preprocess` decides what is scored (the whole clip unless the model's
        `max_dur` is set); the runner's `max_dur` does not apply. Raises `ScoreItemError`
        naming a bad input."""
        if kwargs:
            raise TypeError(f"DNSMOSRewardModel.score_batch got unknown options: {sorted(kwargs)}")
        windows, owner = [], []
        for i, x in enumerate(inputs):
            item = as_input(x)
            try:
                w = dnsmos_windows(self.prepare(item.audio))
            except Exception as e:  # noqa: BLE001 - re-raised with the item named
                raise ScoreItemError(i, item, f"{type(e).__name__}: {e}") from e
            windows.append(w)
            owner += [i] * len(w)
        out = np.full((len(windows), 5), np.nan, dtype=np.float64)
        if not windows:
            return out
        raw = self._run(np.concatenate(windows))  # [W, 3]: SIG, BAK, OVRL before calibration
        sig, bak, ovr = self._speechmos.DNSMOS.get_polyfit_val(
            None, raw[:, 0], raw[:, 1], raw[:, 2], self.personalized
        )
        owners = np.asarray(owner)
        for i in range(len(windows)):
            sel = owners == i
            out[i, 2:] = [np.mean(ovr[sel]), np.mean(sig[sel]), np.mean(bak[sel])]
        out[:, MUSICALITY] = out[:, 2]
        return out

    def _run(self, windows: np.ndarray) -> np.ndarray:
        """[W, 144160] float32 windows -> raw network outputs [W, 3] (float64)."""
        parts = [
            self.session.run(None, {self.input_name: windows[s : s + self.window_batch]})[0]
            for s in range(0, len(windows), self.window_batch)
        ]
        return np.concatenate(parts).astype(np.float64)
