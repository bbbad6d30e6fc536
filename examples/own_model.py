"""Your own CNN, trained with a plain torch loop, then its volume and flatness in one call each.

    python examples/own_model.py

No flatvol model, prior or data class: the network is a plain nn.Module with PyTorch's default
init, and the prior of the volume is that init (`reset_parameters()`), sampled by Monte Carlo.
The images are made up (8x8, label = brighter left half); use yours: x (n, C, H, W), y in {0,1}.
"""

import torch
from torch import nn

import flatvol
from flatvol.flatness import keskar_sharpness

torch.manual_seed(0)
x = torch.randn(160, 1, 8, 8)
y = (x[..., :4].sum((1, 2, 3)) > x[..., 4:].sum((1, 2, 3))).float()
x_S, y_S, x_E, y_E = x[:100], y[:100], x[100:], y[100:]

model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 1),
                      nn.Flatten(0))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(300):
    optimizer.zero_grad()
    loss = nn.functional.binary_cross_entropy_with_logits(model(x_S), y_S)
    loss.backward()
    optimizer.step()

test_acc = ((model(x_E) > 0).float() == y_E).float().mean().item()
v = flatvol.volume_of(model, x_S, y_S, x_E, n_samples=1000)
print(f"train acc {v.train_accuracy:.3f}  test acc {test_acc:.3f}  prior: {v.init}")
print(f"log10 V(f)   {v.log10_volume:.2f} +- {v.log10_volume_stderr:.2f}")
print(f"log10 V(f|S) {v.log10_volume_conditional:.2f} +- {v.log10_volume_conditional_stderr:.2f}")
print(f"PAC-Bayes bound {v.pac_bayes_bound:.3f} +- {v.pac_bayes_bound_stderr:.3f}")
print(f"log10 sharpness {keskar_sharpness(model, x_S, y_S).log10_sharpness:.3f}")
