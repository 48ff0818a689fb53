"""Imagination: the trained world model (rsr/world_model) with a reward of rsr/rewards, behind the simulator's
Env protocol (env.py: WorldModelEnv, its start bank). It sits above both, so neither imports the other's
users."""
