"""The world model: a frame tokenizer, the action-conditioned dynamics (with a done head), the goal model."""
