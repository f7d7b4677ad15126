"""The shard stage: conversation records → 200 ms micro-turn samples in WebDataset tars."""
