"""Prefect flows: one module per DVC stage (`python -m flows.<stage>`), plus `train_compare`.

Prefect's settings for all of them live in prefect.toml at the project root."""
