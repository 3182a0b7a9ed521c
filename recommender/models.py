"""Recommender models: training configurations, model versions, vectors and re-ranking rules."""
