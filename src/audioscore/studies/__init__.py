"""Studies built on the library: the singer probe, run comparison, the timbre experiment and
CAM++ pretraining on synthetic singers. The library (models, data, losses, metrics, export,
score) never imports them (import-linter contract)."""
