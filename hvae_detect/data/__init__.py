"""Images in: input checks, image sources that need not fit in memory, the paper's data sets by
name, and the random numbers keyed by an image (``randomness``)."""
