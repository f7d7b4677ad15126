"""Placeholder package; see DESIGN.md for its role."""
