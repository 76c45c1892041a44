"""CASNet (Common Attribute Support Network): a pure Python/PyTorch library. Never imports ROS."""

from pathlib import Path

__version__ = "0.1.0"

#: The shipped default model: trained on generated street scenes only (see README, "The default model").
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "casnet_default.pt"


def default_model_path() -> Path:
    """The checkpoint every command and the node use when none is given (installed with the package)."""
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(f"the default model {DEFAULT_MODEL} is missing from this installation")
    return DEFAULT_MODEL
