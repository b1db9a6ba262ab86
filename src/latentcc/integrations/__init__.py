"""Thin adapters that plug :class:`latentcc.correction.LatentClusterCorrection` into training frameworks.

Import them from their modules, which import the framework on use (``import latentcc`` never does):

* ``latentcc.integrations.lightning.LCCCallback``: a PyTorch Lightning callback (``pip install 'latentcc[lightning]'``).
* ``latentcc.integrations.hf.LCCTrainer`` / ``LCCTrainerMixin``: a Hugging Face ``Trainer`` (``pip install 'latentcc[hf]'``).

Both only schedule ``refresh`` and add ``weighted_loss``; the algorithm lives in ``latentcc.lcc``. See docs/integrations.md.
"""
