"""Clusterability probes: which metrics of which layers, computed and reported (`latentcc probe`).

``profile.py`` runs a profile (one latent pass per split, then every selected metric family at every
layer); ``registry.py`` holds one entry per metric family (keys, split, job, report panels, summary
sentence, settings); ``inputs.py`` adapts the data, ``select.py`` picks the layers, ``checks.py`` refuses
settings a run would ignore, ``views.py`` makes the report's 2-D views, ``summary.py`` states the facts
and ``report.py`` writes the HTML report. Nothing is imported here: ``latentcc.profile`` is the front door.
"""
