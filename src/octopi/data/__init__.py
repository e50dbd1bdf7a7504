"""Copick data access, synthetic projects, targets, splits and training patches."""
