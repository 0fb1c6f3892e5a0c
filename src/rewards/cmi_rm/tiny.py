"""A small random CMI-RM built offline, saved in the released layout and loaded like the real one.

Layout written at `out`:
    config.yaml, model.safetensors          the CMI-RM checkpoint (head weights only, as released)
    encoders/muq-tiny/                      random MuQ (`MuQ.save_pretrained`)
    encoders/xlm-roberta-tiny/              random XLM-R + a locally built WordPiece tokenizer
    encoders/muq-mulan-tiny/                MuQMuLan config + weights pointing at the two above

The real model pulls `OpenMuQ/MuQ-MuLan-large` (which pulls MuQ-large and `xlm-roberta-base`).
Here `model_name` is the local MuQ-MuLan dir, loaded by the same `SafeMuQMuLan.from_pretrained` (rewards.cmi_rm.towers).
The tokenizer is a `PreTrainedTokenizerFast` with XLM-R's special tokens and `<s> $A </s>`
framing over a character WordPiece vocabulary, so `AutoTokenizer.from_pretrained(dir)` works offline.
Paths inside are absolute: move the directory and it must be rebuilt.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

from audiobase.files import atomic_path
from audiobase.muq import build_tiny_muq_dir
from rewards.cmi_rm.config import CONFIG_NAME, WEIGHTS_NAME, CMIRMConfig
from rewards.cmi_rm.model import CMIRewardNet

TINY_DIM = 32
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R ids 0..4


def save_tiny_tokenizer(path: Path) -> int:
    """A character WordPiece tokenizer with XLM-R special tokens; returns the vocabulary size."""
    chars = string.ascii_lowercase + string.digits
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[f"##{c}"] = len(vocab)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=64,
    )
    fast.save_pretrained(path)
    return len(vocab)


def save_tiny_xlmr(path: Path) -> None:
    vocab = save_tiny_tokenizer(path)
    cfg = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=TINY_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64 + 2,  # XLM-R positions start after the padding index
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    XLMRobertaModel(cfg).save_pretrained(path)


def tiny_mulan_config(muq_dir: str, xlmr_dir: str) -> dict:
    tf = {
        "dim": TINY_DIM,
        "heads": 2,
        "dim_head": 16,
        "attn_dropout": 0.0,
        "ff_dropout": 0.0,
        "ff_mult": 4,
    }
    return {
        "mulan": {"sr": 24000, "clip_secs": 10, "dim_latent": 16, "rank_contrast": True},
        "audio_model": {"name": muq_dir, "model_dim": TINY_DIM, "use_layer_idx": -1},
        "text_model": {"name": xlmr_dir, "model_dim": TINY_DIM},
        "audio_transformer": {**tf, "tf_depth": 0},  # depth 0 as in MuQ-MuLan-large
        "text_transformer": {**tf, "tf_depth": 1, "max_seq_len": 64},
    }


def tiny_head_config(model_name: str) -> dict:
    return {
        "model": {
            "name": "reward",
            "model_name": model_name,
            "dim": TINY_DIM,
            "heads": 2,
            "dim_head": 16,
            "mlp_dim": 64,
            "prompt_tf_depth": 1,
            "joint_tf_depth": 1,
            # a strided eval/ref downsampler exercises the per-item downsampling path
            "downsample": {
                "configs": {"none": {"kind": "none"}, "pool2": {"kind": "b1", "factor": 2}},
                "eval": "pool2",
                "text": "none",
            },
        }
    }


def build_tiny_cmi_rm(out: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random CMI-RM to `out` (no-op if one is there); safe against concurrent builders."""
    # heavy (muq pulls torchvision): only when a tiny model is built
    from rewards.cmi_rm.towers import SafeMuQMuLan

    out = Path(out).absolute()
    if (out / CONFIG_NAME).is_file() and (out / WEIGHTS_NAME).is_file():
        return out
    with atomic_path(out, is_dir=True) as tmp, torch.random.fork_rng(devices=[]):
        enc_tmp, enc_final = tmp / "encoders", out / "encoders"
        torch.manual_seed(seed)
        build_tiny_muq_dir(enc_tmp / "muq-tiny", seed=seed, dim=TINY_DIM)
        save_tiny_xlmr(enc_tmp / "xlm-roberta-tiny")
        mulan = SafeMuQMuLan(
            tiny_mulan_config(str(enc_tmp / "muq-tiny"), str(enc_tmp / "xlm-roberta-tiny"))
        )
        mulan.save_pretrained(enc_tmp / "muq-mulan-tiny")
        # the saved MuQ-MuLan config must point at the final location, not the temp dir
        cfg_json = enc_tmp / "muq-mulan-tiny" / "config.json"
        final_cfg = tiny_mulan_config(
            str(enc_final / "muq-tiny"), str(enc_final / "xlm-roberta-tiny")
        )
        saved = json.loads(cfg_json.read_text())
        saved.update(final_cfg)
        cfg_json.write_text(json.dumps(saved, indent=2))
        head_cfg = tiny_head_config(str(enc_final / "muq-mulan-tiny"))
        mu = mulan.mulan_module
        net = CMIRewardNet(CMIRMConfig.from_dict(head_cfg), towers=(mu.audio, mu.text))
        for (
            name,
            p,
        ) in net.named_parameters():  # non-trivial values everywhere, incl. null embeddings
            if name.startswith("null_") or name.endswith(("q_scale", "k_scale", "learned_gamma")):
                with torch.no_grad():
                    p.add_(0.1 * torch.randn_like(p))
        save_file(
            {k: v.contiguous() for k, v in net.head_state_dict().items()}, str(tmp / WEIGHTS_NAME)
        )
        (tmp / CONFIG_NAME).write_text(yaml.safe_dump(head_cfg, sort_keys=False))
    return out
