"""What leaves the model: frozen graphs with batch norm folded, SavedModels, TFLite models."""
