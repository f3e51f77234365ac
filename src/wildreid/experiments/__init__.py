"""Reproducible experiments that train and evaluate several models (``wildreid experiment``)."""
