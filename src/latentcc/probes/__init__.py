"""Clusterability probes: which metrics of which layers, computed and reported (`latentcc probe`)."""
