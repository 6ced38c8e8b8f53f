"""Runnable demos of the generative models (``python -m asr.generative.demos.<name>``)."""
