"""The preprocessing stage: HW3P2 layout on any fsspec URL → normalised WebDataset shards."""
