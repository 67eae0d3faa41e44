"""objstore.stores."""
