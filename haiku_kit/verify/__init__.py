"""Checking a poem: syllable counts, the 5-7-5 verifier, prompt/answer text, topic similarity."""
