"""The optimizer registry: (name, options) -> optimizer; TrainConfig carries the options; the
ensemble's stacked update is torch.optim's, member by member."""

import pytest
import torch

from flatvol.errors import SpecError
from flatvol.train import TrainConfig, make_optimizer, optimizer_names, register_optimizer
from flatvol.train.optimizers import OptimizerSettings, check_optimizer
from flatvol.train.stacked import StackedOptimizer


def test_options_live_in_the_config_not_in_the_name():
    config = TrainConfig(optimizer="sam", optimizer_options={"rho": 0.1, "base": "adam"})
    assert config.optimizer == "sam" and set(optimizer_names()) >= {"sam", "sgd"}
    assert not any("(" in n or ":" in n for n in optimizer_names())  # no minted aliases
    assert config.to_dict()["optimizer_options"] == {"rho": 0.1, "base": "adam"}
    opt = make_optimizer("sam", [torch.nn.Parameter(torch.zeros(2))],
                         config.optimizer_settings())
    assert opt.param_groups[0]["rho"] == 0.1
    assert isinstance(opt.base_optimizer, torch.optim.Adam)
    # Configs without options are recorded (and hashed) as before options existed.
    assert "optimizer_options" not in TrainConfig().to_dict()


def test_config_copies_its_options():
    options = {"rho": 0.1}
    config = TrainConfig(optimizer="sam", optimizer_options=options)
    options["rho"] = 0.5
    assert config.optimizer_settings().options == {"rho": 0.1}
    assert config == TrainConfig(optimizer="sam", optimizer_options={"rho": 0.1})
    assert config != TrainConfig(optimizer="sam", optimizer_options={"rho": 0.5})
    assert hash(config) == hash(TrainConfig(optimizer="sam", optimizer_options={"rho": 0.1}))


def test_unknown_names_and_options_are_refused_when_the_config_is_made():
    with pytest.raises(SpecError, match="unknown optimizer 'nope'"):
        TrainConfig(optimizer="nope")
    with pytest.raises(SpecError, match="'sgd': unknown option.*rho; expected none$"):
        TrainConfig(optimizer="sgd", optimizer_options={"rho": 0.1})
    with pytest.raises(SpecError, match="'sam': unknown option.*radius; expected some of base"):
        check_optimizer("sam", {"radius": 1})
    check_optimizer("sam", {"rho": 1})


def test_registered_options_reach_the_factory():
    seen = {}

    def factory(params, settings):
        seen.update(settings.options)
        return torch.optim.SGD(params, lr=settings.lr)

    register_optimizer("test-only-options", factory, options=("flavour",))
    config = TrainConfig(optimizer="test-only-options", optimizer_options={"flavour": "x"})
    make_optimizer(config.optimizer, [torch.nn.Parameter(torch.zeros(1))],
                   config.optimizer_settings())
    assert seen == {"flavour": "x"}


@pytest.mark.parametrize("name,weight_decay", [("sgd", 0.0), ("momentum", 1e-2), ("adam", 0.0),
                                               ("adam", 1e-2), ("amsgrad", 0.0)])
def test_stacked_update_is_torch_optims_member_by_member(name, weight_decay):
    """Steps in two groups of members, as the ensemble takes them, equal torch.optim's steps on
    each member alone (bit for bit: the update is elementwise)."""
    gen = torch.Generator().manual_seed(0)
    members, steps = 4, 5
    settings = OptimizerSettings(0.05, momentum=0.9, weight_decay=weight_decay)
    stacked = {"w": torch.randn(members, 3, 2, generator=gen), "b": torch.randn(members, 3,
                                                                              generator=gen)}
    grads = [{k: torch.randn(v.shape, generator=gen) for k, v in stacked.items()}
             for _ in range(steps)]
    alone = [{k: torch.nn.Parameter(v[m].clone()) for k, v in stacked.items()}
             for m in range(members)]
    optimizer = StackedOptimizer(name, settings, stacked)
    for step in range(1, steps + 1):
        for rows in (slice(0, 3), slice(3, 4)):
            group = {k: v[rows] for k, v in stacked.items()}
            rows_grads = {k: g[rows] for k, g in grads[step - 1].items()}
            optimizer.step(group, lambda need_loss, g=rows_grads: (None, g), rows, step)
    for m, params in enumerate(alone):
        reference = make_optimizer(name, list(params.values()), settings)
        for step in range(steps):
            for k, p in params.items():
                p.grad = grads[step][k][m].clone()
            reference.step()
        for k, p in params.items():
            assert torch.equal(stacked[k][m], p.detach()), f"{name} member {m} {k}"


def test_stacked_optimizer_refuses_others():
    params = {"w": torch.zeros(2, 3)}
    register_optimizer("test-only-rmsprop", lambda p, s: torch.optim.RMSprop(p, lr=s.lr))
    with pytest.raises(SpecError, match="cannot stack a RMSprop update"):
        StackedOptimizer("test-only-rmsprop", OptimizerSettings(0.1), params)
    with pytest.raises(SpecError, match="unknown option"):
        StackedOptimizer("sgd", OptimizerSettings(0.1, options={"x": 1}), params)


def test_amsgrad_is_adam_with_the_running_maximum_of_the_second_moment():
    # a large gradient then small ones: Adam's second moment decays, AMSGrad's maximum does not,
    # so AMSGrad takes the smaller steps (Reddi et al. 2018)
    moved = {}
    for name in ("adam", "amsgrad"):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = make_optimizer(name, [p], OptimizerSettings(0.1))
        assert opt.param_groups[0]["amsgrad"] is (name == "amsgrad")
        for g in (10.0, 0.1, 0.1, 0.1):
            p.grad = torch.tensor([g])
            opt.step()
        moved[name] = -p.item()
    assert moved["amsgrad"] < moved["adam"]
