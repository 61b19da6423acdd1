"""The embedded offline suite: real handwritten digits, generated shifts, a tiny CLIP, baselines."""
