"""The training run's jobs, each its own module; `audioscore.train` runs them in order.

`build`: config to modules (`init_from`: starting weights); `fit`: the Lightning run;
`loggers`: reporting (wandb, CSV, resumed histories). Export of the best checkpoint is
`audioscore.export.run.export_best`.
"""
