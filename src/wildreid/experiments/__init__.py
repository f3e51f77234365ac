"""Experiments: studies that train and evaluate several models and compare them."""
