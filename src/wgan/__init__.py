"""WGAN on MNIST: the library behind the DVC stages in ``stages/``."""

__version__ = "0.1.0"
