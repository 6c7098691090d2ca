"""Targets: targets.toml and the settings layered over it (built-in defaults, file, FARM_*, flags)."""
