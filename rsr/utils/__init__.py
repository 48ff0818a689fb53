"""Small shared utilities (media files, atomic writes)."""
