"""slidelite: torch-free edge inference for Slide-Transformer image classifiers."""
__version__ = "0.1.0"
