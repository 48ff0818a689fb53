"""TFDS builders (RLDS schema), windowed loaders and the tokenized-dataset pass.

Empty until the data-pipeline issue lands; the package exists so the layout users expect is stable.
"""
