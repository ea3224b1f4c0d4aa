"""The training stage: models, the Ray Train loop, Ray Tune search, evaluation and gates."""
