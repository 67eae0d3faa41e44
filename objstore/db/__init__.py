"""objstore.db."""
