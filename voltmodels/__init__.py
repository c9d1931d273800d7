"""voltmodels: average-voltage prediction of battery electrodes from crystal structure."""

__version__ = "0.1.0"
