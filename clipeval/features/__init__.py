"""Image features and text classifiers of a model (cached on disk through clipeval.cache)."""
