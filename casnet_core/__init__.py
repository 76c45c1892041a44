"""CASNet (Common Attribute Support Network): a pure Python/PyTorch library. Never imports ROS."""

__version__ = "0.1.0"
