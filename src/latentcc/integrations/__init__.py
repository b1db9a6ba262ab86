"""Thin adapters that plug :class:`latentcc.lcc.correction.LatentClusterCorrection` into training frameworks.

Import them from their modules, which import the framework on use (``import latentcc`` never does):

* ``latentcc.integrations.lightning.LCCCallback``: a PyTorch Lightning callback (the ``lightning`` extra: ``pip install -e '.[lightning]'`` in the repository).
* ``latentcc.integrations.hf.LCCTrainer`` / ``LCCTrainerMixin``: a Hugging Face ``Trainer`` (the ``hf`` extra: ``pip install -e '.[hf]'`` in the repository).

Both only schedule ``refresh`` and add ``weighted_loss``; the algorithm lives in ``latentcc.lcc``. See docs/integrations.md.
"""
