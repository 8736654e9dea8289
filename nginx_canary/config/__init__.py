"""The daemon's YAML configuration."""
