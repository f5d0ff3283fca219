"""Stage two, training: the dataset over a store, splits, building a head from a store, the one
training loop and its checkpoints (`loop.train_head`)."""
