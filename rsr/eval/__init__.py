"""Evaluation: jitted rollouts in the real simulator, success statistics, tables, the exploitation gap.
Evaluating a trained run (trained.py) and the whole grid (reproduce.py) are stages: rsr/stages."""
