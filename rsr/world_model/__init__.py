"""The world model: a frame tokenizer, the action-conditioned dynamics (with a done head), the goal model.
As an environment for RL it is rsr/imagination (WorldModelEnv)."""
