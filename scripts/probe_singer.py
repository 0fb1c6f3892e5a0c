"""Linear probe for singer identity on an exported scorer (CLI of `audioscore.studies.probe`).

python scripts/probe_singer.py outputs/train/muq_lora/<run>/export data/synth/val.json [--part audio]
"""

from audioscore.studies.probe import main

if __name__ == "__main__":
    main()
