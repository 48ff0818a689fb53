"""rsr: RoboScape-R in JAX. World models as RL environments with endogenous rewards."""

__version__ = "0.1.0"
