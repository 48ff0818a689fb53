"""The tabletop simulator: MJX physics on an MJCF scene built in code, rendered in JAX."""
