"""defenses package."""
