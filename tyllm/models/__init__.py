"""Model architectures: per-arch folders, the registry (registry.py), the per-die decoder step."""
