"""Training the feed-forward PFSR generator on a folder of face pictures."""
