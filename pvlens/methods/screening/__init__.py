"""Screening training data with the projection difference (ΔP): :mod:`~pvlens.methods.screening.screen` scores
samples on one machine, :mod:`~pvlens.methods.screening.ray` ships the same chunks to a Ray cluster."""

from pvlens.methods.screening.ray import ray_engine
from pvlens.methods.screening.screen import *  # noqa: F403 -- the package's API is screen.py's, plus ray_engine
from pvlens.methods.screening.screen import __all__ as screen_api

__all__ = [*screen_api, "ray_engine"]
