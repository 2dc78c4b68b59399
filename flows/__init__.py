"""Prefect flows: one module per DVC stage (`python -m flows.<stage>`), plus `train_compare`."""

import os

# Set before Prefect is imported. Without a configured server every stage process starts
# Prefect's temporary one, which can take longer than its 20 s default limit on a busy 2-core
# machine; and the deployment's executor should pick a run up within 1 s rather than 10.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
