"""Which models are loaded and who runs them: scheduler, workers, GPU fit, the sync-to-async pump."""
