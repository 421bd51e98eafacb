"""AstrAI training: tokenizer, data preparation, one trainer with a strategy per stage (PT, SFT, DPO, RM),
distributed data parallelism and the ``astrai-train`` CLI. See docs/training.md."""
