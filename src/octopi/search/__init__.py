"""Model exploration: Optuna study storage, trial slots, best-model selection."""
