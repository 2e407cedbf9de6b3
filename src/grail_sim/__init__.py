"""grail-sim: train and evaluate LLM simulators of human viewing behaviour."""

__version__ = "0.1.0"
