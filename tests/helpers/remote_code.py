"""A CMI-RM checkpoint folder that carries code: its MuQ-MuLan config points the audio tower
at a folder with an `auto_map` config and the Python module it names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

EVIL_PY = """
from pathlib import Path
Path({marker!r}).write_text("code from the checkpoint ran")
from transformers import PretrainedConfig, PreTrainedModel
class EvilConfig(PretrainedConfig):
    model_type = "evil"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def crafted_cmi_rm(tiny: Path, root: Path, marker: Path, opt_in_file: bool = False) -> Path:
    """A CMI-RM folder whose MuQ-MuLan config points its audio tower at a folder with an
    `auto_map` config and the Python it names (which writes `marker` when imported)."""
    out = root / "cmi_rm"
    out.mkdir()
    shutil.copy(tiny / "model.safetensors", out)
    evil = out / "encoders" / "audio-tower"
    evil.mkdir(parents=True)
    (evil / "evil.py").write_text(EVIL_PY.format(marker=str(marker)))
    (evil / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
            }
        )
    )
    mulan = out / "encoders" / "mulan"
    shutil.copytree(tiny / "encoders" / "muq-mulan-tiny", mulan)
    cfg = json.loads((mulan / "config.json").read_text())
    cfg["audio_model"]["name"] = str(evil)
    (mulan / "config.json").write_text(json.dumps(cfg))
    head = yaml.safe_load((tiny / "config.yaml").read_text())
    head["model"]["model_name"] = str(mulan)
    if opt_in_file:  # the checkpoint trying to opt itself in
        head["model"]["trust_remote_code"] = True
        head["trust_remote_code"] = True
    (out / "config.yaml").write_text(yaml.safe_dump(head))
    return out
