"""Training objectives: pure loss functions and small objectives that return named, weighted terms."""

from edgekd.training.distill.objectives import METHODS, Objective, build_objective

__all__ = ["METHODS", "Objective", "build_objective"]
