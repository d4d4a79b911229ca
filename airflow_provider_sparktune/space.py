"""The documented import path of declarative search spaces: ``from airflow_provider_sparktune.space
import build_space``. The code lives in :mod:`airflow_provider_sparktune.tuning.space`."""

from __future__ import annotations

from airflow_provider_sparktune.tuning.space import SpaceFacts, build_space, space_facts, validate_space

__all__ = ["SpaceFacts", "build_space", "space_facts", "validate_space"]
