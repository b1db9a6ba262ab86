"""The embedded pretrained weights are worth something on the embedded downstream data."""

from latentcc.config import TrainConfig
from latentcc.data import load_dataset
from latentcc.models import load_model
from latentcc.plumbing.seeding import seed_everything
from latentcc.train import fit


def test_pretrained_mnist_cnn_beats_random_init_on_animal_mnist_after_one_short_epoch():
    splits = load_dataset("animal-mnist", seed=0, max_samples=5000)  # 3500 train / 500 val / 1000 test
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress=False, tensorboard=False)
    acc = {}
    for pretrained in (True, False):
        seed_everything(0)
        model = load_model("mnist-cnn", num_classes=splits.num_classes, pretrained=pretrained)
        acc[pretrained] = fit(model, splits, config=cfg).test.top1
    # measured here: 0.854 vs 0.717 (an earlier check with 8k images saw 0.927 vs 0.840)
    print(acc)
    assert acc[True] > 0.75
    assert acc[True] > acc[False] + 0.05, acc
