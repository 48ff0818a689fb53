"""Agents that act in the environments and in the world model: actor-critic networks, PPO, behaviour cloning."""
