"""Presets shipped with regkit (YAML). Loaded by name, e.g. ``--config fast``."""
