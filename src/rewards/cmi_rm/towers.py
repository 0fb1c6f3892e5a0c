"""MuQ-MuLan towers loaded without running code from the folders they are loaded from.

`muq`'s own towers call `from_pretrained(..., trust_remote_code=True)` (an audio model that is
not MuQ, the XLM-R or Qwen text model, the tokenizer), so a folder whose config carries an
`auto_map` entry would import and run its own Python. Here the same towers are built with
`trust_remote_code=False` unless the caller opts in, and before anything is loaded the local
folders involved (the MuQ-MuLan folder and the tower folders its config.json names, or their
Hugging Face cache snapshots) are refused when they carry code: a `*.py` file, or an
`auto_map` entry in any `*.json`. The refusal names the opt-in key, `trust_remote_code`.

This module imports `muq` (and with it torchvision): `rewards.cmi_rm.model` imports it only
when real towers are loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import transformers.utils.import_utils as transformers_imports
from huggingface_hub import try_to_load_from_cache

# transformers imports scikit-learn (and with it scipy.stats: 0.5 s) when it is installed, for
# assisted text generation's candidate tuning only; these towers never generate text
transformers_imports._sklearn_available = False
# ... and scipy.optimize (0.18 s) when scipy is installed, for object-detection losses only
transformers_imports._scipy_available = False

from muq import MuQ, MuQMuLan  # noqa: E402
from muq.muq_mulan.models.audio import AudioSpectrogramTransformerPretrained  # noqa: E402
from muq.muq_mulan.models.mulan import MuLanModel  # noqa: E402
from muq.muq_mulan.models.text import TextPretrainedModelType, TextTransformerPretrained  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    Wav2Vec2FeatureExtractor,
    XLMRobertaModel,
)

from audiobase.weights import hub_mixin_quiet  # noqa: E402
from rewards.cmi_rm.config import REMOTE_CODE_KEY, RemoteCodeRefused  # noqa: E402


def local_folder(name: str) -> Path | None:
    """The folder `from_pretrained(name)` reads: `name` itself when it is a directory, else the
    cached snapshot of hub repo `name` (None when it is neither)."""
    if Path(name).is_dir():
        return Path(name)
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id either: from_pretrained reports it
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def code_in(folder: Path) -> list[str]:
    """What in `folder` would make a `trust_remote_code=True` load run code: its `*.py`
    files and the `*.json` files holding an `auto_map` entry (empty: nothing)."""
    found = sorted(p.name for p in folder.glob("*.py"))
    found += sorted(
        f"auto_map in {p.name}"
        for p in folder.glob("*.json")
        if p.is_file() and b'"auto_map"' in p.read_bytes()
    )
    return found


def refuse_code(folder: Path) -> None:
    """Raise `RemoteCodeRefused` (naming the opt-in key) when `folder` carries code."""
    found = code_in(folder)
    if found:
        raise RemoteCodeRefused(
            folder,
            f"carries code ({', '.join(found)}) that loading the MuQ-MuLan towers from it would "
            f"run; refused unless the model config sets `{REMOTE_CODE_KEY}: true` (command line "
            f"model.{REMOTE_CODE_KEY}=true) for a folder you trust",
        )


def check_mulan_folders(model_name: str) -> None:
    """Refuse the MuQ-MuLan folder `model_name` and the tower folders its config.json names
    (where they are local or cached) when any carries code (`refuse_code`)."""
    root = local_folder(model_name)
    if root is None:
        return
    refuse_code(root)
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # from_pretrained reports a missing or broken config
        return
    for section in ("audio_model", "text_model"):
        entry = config.get(section) if isinstance(config, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        folder = local_folder(name) if isinstance(name, str) and name else None
        if folder is not None:
            refuse_code(folder)


class AudioTower(AudioSpectrogramTransformerPretrained):
    """muq's audio tower, its pretrained model loaded with `trust_remote_code` as the class says."""

    trust_remote_code = False
    is_muq = False  # the pretrained model is muq's MuQ (not a transformers AutoModel)

    def _init_pretrained_model(self, model_name: str) -> None:
        if "muq" in model_name.lower():  # muq's own MuQ class: config.json + weights, no code
            with hub_mixin_quiet():
                self.model = MuQ.from_pretrained(model_name, cache_dir=self.hf_hub_cache_dir)
            self.is_muq = True
            return
        trust, cache = self.trust_remote_code, self.hf_hub_cache_dir
        self.model = AutoModel.from_pretrained(model_name, trust_remote_code=trust, cache_dir=cache)
        self.processor = Wav2Vec2FeatureExtractor.from_pretrained(
            model_name, trust_remote_code=trust, cache_dir=cache
        )
        if self.processor.sampling_rate != self.sr:
            raise ValueError(
                f"{model_name}: feature extractor rate {self.processor.sampling_rate} != {self.sr}"
            )


class TextTower(TextTransformerPretrained):
    """muq's text tower, its model and tokenizer loaded with `trust_remote_code` as the class says."""

    trust_remote_code = False

    def _init_pretrained_model(self) -> nn.Module:
        trust, cache = self.trust_remote_code, self.hf_hub_cache_dir
        if self.pretrained_model_type == TextPretrainedModelType.Roberta:
            return XLMRobertaModel.from_pretrained(
                self.model_name, trust_remote_code=trust, cache_dir=cache
            )
        if self.pretrained_model_type == TextPretrainedModelType.Qwen:
            return AutoModelForCausalLM.from_pretrained(
                self.model_name, trust_remote_code=trust, fp16=True, cache_dir=cache
            )
        raise ValueError(f"unknown pretrained text model type {self.pretrained_model_type!r}")

    def _init_tokenizer(self) -> Any:
        tokenizer = AutoTokenizer.from_pretrained(
            self.model_name,
            trust_remote_code=self.trust_remote_code,
            cache_dir=self.hf_hub_cache_dir,
        )
        if self.pretrained_model_type == TextPretrainedModelType.Qwen:
            tokenizer.pad_token = "<|im_end|>"
        return tokenizer


class TrustingAudioTower(AudioTower):
    """Built only through TrustingMuQMuLan, when the model config sets `trust_remote_code: true`."""

    trust_remote_code = True


class TrustingTextTower(TextTower):
    """Built only through TrustingMuQMuLan, when the model config sets `trust_remote_code: true`."""

    trust_remote_code = True


class SafeMuQMuLan(MuQMuLan):
    """`muq.MuQMuLan` whose towers load without remote code (`from_pretrained` as muq's)."""

    audio_tower: type[AudioTower] = AudioTower
    text_tower: type[TextTower] = TextTower

    @classmethod
    def create_MuLan_from_config(cls, config: Any, hf_hub_cache_dir: str | None = None) -> Any:  # noqa: N802 - muq's name
        """muq's `create_MuLan_from_config` with this class's towers."""
        audio = cls.audio_tower(
            model_name=config.audio_model.name,
            model_dim=config.audio_model.model_dim,
            use_layer_idx=config.audio_model.use_layer_idx,
            **config.audio_transformer,
            frozen_pretrained=False,
            hf_hub_cache_dir=hf_hub_cache_dir,
        )
        text = cls.text_tower(
            model_name=config.text_model.name,
            model_dim=config.text_model.model_dim,
            **config.text_transformer,
            frozen_pretrained=False,
            hf_hub_cache_dir=hf_hub_cache_dir,
        )
        return MuLanModel(audio_transformer=audio, text_transformer=text, **config.mulan)


class TrustingMuQMuLan(SafeMuQMuLan):
    """SafeMuQMuLan opted in to remote code (`trust_remote_code: true`)."""

    audio_tower = TrustingAudioTower
    text_tower = TrustingTextTower


def load_mulan_towers(
    model_name: str, trust_remote_code: bool = False
) -> tuple[nn.Module, nn.Module]:
    """(audio tower, text tower) of the MuQ-MuLan `model_name` (hub id or local dir). Without
    `trust_remote_code`, folders that carry code are refused first (`check_mulan_folders`) and
    nothing is loaded with remote code; a hub model that needs it raises `RemoteCodeRefused`."""
    if trust_remote_code:
        with hub_mixin_quiet():
            return _towers(TrustingMuQMuLan.from_pretrained(model_name))
    check_mulan_folders(model_name)
    try:
        with hub_mixin_quiet():
            return _towers(SafeMuQMuLan.from_pretrained(model_name))
    except ValueError as e:  # transformers: "... pass the argument `trust_remote_code=True`"
        if "trust_remote_code" not in str(e):
            raise
        raise RemoteCodeRefused(
            model_name,
            f"needs remote code to load ({e}); refused unless the model config sets "
            f"`{REMOTE_CODE_KEY}: true` for a model you trust",
        ) from e


def _towers(mulan: MuQMuLan) -> tuple[nn.Module, nn.Module]:
    module = mulan.mulan_module
    return module.audio, module.text
