"""The paper's protocol end to end: FCN 784-40-40-1, S=500, E=1000, SGD lr 0.01 batch 32."""

from flatvol.data import load_task
from flatvol.train import TrainConfig
from flatvol.train.run import RunSpec, train_run


def test_paper_protocol_fits_S_and_attack_set_hurts_generalization():
    infos = {}
    for attack in (0, 500):
        task = load_task("mnist", train_size=500, attack_size=attack, test_size=1000)
        spec = RunSpec(attack_size=attack, seed=0, train=TrainConfig(max_epochs=2000))
        _, infos[attack] = train_run(spec, task)
    for info in infos.values():
        assert info["status"] == "fitted" and info["train_acc_S"] == 1.0
    # Clean MNIST 0-4 vs 5-9 with 500 points generalizes to ~0.8; 500 flipped labels push
    # the learned function towards chance on E.
    assert infos[0]["test_acc_E"] > 0.75
    assert infos[0]["test_acc_E"] - infos[500]["test_acc_E"] > 0.15
