"""Layers by name and the latents they produce: name resolution, capture hooks, collection over a loader."""
