"""The project's file schemas: the field names of every file format it reads or writes.

- bench JSONL row: one line of a CMI-RewardBench dataset file (`bench.data` reads it;
  `audioscore.synth` writes the synthetic one);
- results row: one line of a benchmark's `results.jsonl` (`bench.records` writes it,
  `bench.store` and `bench.metrics` read it): the input row plus these fields;
- groups entry: one clip of a training groups file (`audioscore.data.groups`);
- export config: an exported scorer's `config.yaml` (`audioscore.export`).

The TypedDicts document each record's shape for type checkers; the constants are the names
the code uses, so a field is spelled in one place. Names with hyphens or spaces are
CMI-RewardBench's own.
"""

from __future__ import annotations

from typing import Any, TypedDict

# --- bench JSONL row (CMI-RewardBench's dataset schema) -------------------------------------
SOURCE = "source"  # decides the subset (bench.data.subset_of)
SPLIT = "split"  # kept where str(split) equals the dataset's split
AUDIO_A = "audio-path"  # clip A (every row), relative to the dataset root or absolute
AUDIO_B = "audio2"  # clip B (pair rows only)
REF_AUDIO = "ref-audio-path"  # optional reference clip ("" when absent)
PROMPT = "prompt"
LYRICS = "lyrics"
MUSICALITY = "musicality"  # MOS (PAM, MusicEval)
ALIGNMENT = "text-music alignment"  # MOS (PAM)
PREFERENCE = "preference"  # Music Arena: "A" / "B"
PREF_MUSICALITY = "preference-musicality"  # CMI-Pref: "model_a" / "model_b"
PREF_ALIGNMENT = "preference-alignment"
CONFIDENCE = "confidence_"  # + a preference field: the annotator's confidence (1-5)
MODALITY = "modality"  # optional: text, text+lyrics, text+ref, text+lyrics+ref
SYSTEM = "system"  # optional: the generating system (PAM system level)

BenchJsonlRow = TypedDict(
    "BenchJsonlRow",
    {
        "source": str,
        "split": str,
        "audio-path": str,
        "audio2": str,
        "ref-audio-path": str,
        "prompt": str,
        "lyrics": str,
        "musicality": float,
        "text-music alignment": float,
        "preference": str,
        "preference-musicality": str,
        "preference-alignment": str,
        "confidence_preference-musicality": str,
        "confidence_preference-alignment": str,
        "modality": str,
        "system": str,
    },
    total=False,
)

# --- results row: the input row plus these ---------------------------------------------------
SUBSET = "benchmark_dataset"  # PAM | MusicEval | MusicArena | CMI-Pref
PREDICTED = "predicted_"  # prefix of every prediction; `_b` suffix: side B
PRED_ALIGNMENT = PREDICTED + ALIGNMENT
PRED_MUSICALITY = PREDICTED + MUSICALITY
PRED_PREFERENCE = PREDICTED + PREFERENCE  # decided on musicality (upstream 326f8ac)
PRED_PREF_MUSICALITY = PREDICTED + PREF_MUSICALITY
PRED_PREF_ALIGNMENT = PREDICTED + PREF_ALIGNMENT
SIDE_B = "_b"
VALID_A = "inference_valid_a"
VALID_B = "inference_valid_b"
ERROR = "inference_error"
STATUS = "status"  # "ok" | "error"
ROW_INDEX = "bench_row_index"  # 0-based position among the dataset file's non-empty lines
ROW_KEY = "bench_row_key"  # index + content hash: what resuming keys on
MODEL = "bench_model"
FINGERPRINT = "bench_fingerprint"  # 16 hex digits (bench.models.fingerprint)
AUDIO_SECONDS = "bench_audio_seconds"
NAN_SCORES = "bench_nan_scores"  # the record's fields a model returned NaN for

ResultsRow = TypedDict(
    "ResultsRow",
    {
        "benchmark_dataset": str,
        "predicted_text-music alignment": float | None,
        "predicted_musicality": float | None,
        "predicted_text-music alignment_b": float | None,
        "predicted_musicality_b": float | None,
        "predicted_preference": str | None,
        "predicted_preference-musicality": str | None,
        "predicted_preference-alignment": str | None,
        "inference_valid_a": bool,
        "inference_valid_b": bool,
        "inference_error": str,
        "status": str,
        "bench_row_index": int,
        "bench_row_key": str,
        "bench_model": str,
        "bench_fingerprint": str,
        "bench_audio_seconds": float,
        "bench_nan_scores": list[str],
    },
    total=False,
)

# --- groups entry: one clip of a training groups file (groups sorted by score high to low) ----
AUDIO_FILE = "audio_file"  # required; relative to the file's folder (or data.root)
SCORE = "score"  # optional number (strings such as "85" are read as numbers)
SINGER = "singer"  # optional; the GRL adversary's label


class GroupsEntry(TypedDict, total=False):
    audio_file: str
    score: float | None
    singer: str | None


# --- export config: an exported scorer's config.yaml -----------------------------------------
EXPORT_FORMAT = "audioscore-scorer"  # the value of its `format` key
EXPORT_VERSION = 1
EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME = "config.yaml", "model.safetensors"


class ExportConfig(TypedDict, total=False):
    format: str  # EXPORT_FORMAT
    version: int  # EXPORT_VERSION
    sr: int  # the model's sample rate
    preprocess: dict[str, Any]  # audiobase.preprocess.Preprocess.to_dict()
    calibration: dict[str, Any] | None  # the fitted label-scale calibration, or None
    net: dict[str, Any]  # the net's Hydra config, resolved (every _target_ a project component)
    save_full_encoder: bool  # false: base encoder weights come from `pretrained`
    meta: dict[str, Any]  # what the run recorded about itself (free form)
