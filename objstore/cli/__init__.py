"""objstore.cli."""
