"""The train stage: recipes, rewards, GRAIL's discriminator, the supervised warm-up, safe resume,
the vLLM server of a cluster run, and `main.train`, a straight line over them."""
