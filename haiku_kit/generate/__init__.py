"""Writing poems with a model: fast sampling, syllable-constrained decoding, batched seeded generation."""
