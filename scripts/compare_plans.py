"""Compare training runs: markdown table + PNG plots (CLI of `audioscore.studies.compare`).

python scripts/compare_plans.py outputs/demo/plan_a outputs/demo/plan_b --out outputs/compare
python scripts/compare_plans.py wandb:ENTITY/PROJECT/RUN_ID ... --out outputs/compare
"""

from audioscore.studies.compare import main

if __name__ == "__main__":
    main()
