"""Data side of training: tokenizer training, corpus preparation, the memory-mapped token store,
and the datasets the trainer samples from."""
