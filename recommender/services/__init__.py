"""Recommender services: the writes. Training lives in `training.py`, activation in `activation.py`."""
