"""CASNet (Common Attribute Support Network): a pure Python/PyTorch library. Never imports ROS."""

import os
from pathlib import Path

# A vehicle's CPU is shared with the rest of its stack. OpenMP threads that spin-wait between parallel operations
# while another process holds a core make every operation wait for the scheduler: on 2 cores with one busy,
# PyTorch's 2 threads took 1.3 s for a 512x1024 post-processing instead of 56 ms, and 4.5 s instead of 1.0 s for
# the forward pass. Waiting threads sleep instead (README, "CPU threads"); set before torch loads OpenMP, so it
# applies when casnet_core is imported first (every command and the node do); a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

#: The shipped default model: trained on generated street scenes only (see README, "The default model").
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "casnet_default.pt"


def default_model_path() -> Path:
    """The checkpoint every command and the node use when none is given (installed with the package)."""
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(f"the default model {DEFAULT_MODEL} is missing from this installation")
    return DEFAULT_MODEL
