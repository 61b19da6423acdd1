"""Image features and text classifiers of a model, and their on-disk cache."""
