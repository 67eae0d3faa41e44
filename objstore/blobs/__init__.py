"""objstore.blobs."""
