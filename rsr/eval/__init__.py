"""Evaluation: jitted rollouts in the real simulator, success statistics, media."""
