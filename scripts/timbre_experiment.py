"""The controlled timbre experiment (CLI of `audioscore.studies.timbre_experiment`; docs/timbre.md).

python scripts/timbre_experiment.py --out outputs/timbre [seeds=[0,1,2] experiments=[...] ...]
"""

from audioscore.studies.timbre_experiment import main

if __name__ == "__main__":
    main()
