"""MTCNN's three networks (P-, R-, O-net) in facenet-pytorch's layout, with the weights in its wheel.

Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", IEEE SPL 2016, as ported by facenet-pytorch (timesler/facenet-pytorch,
`models/mtcnn.py`, v2.5.3; weights `data/pnet.pt`, `rnet.pt`, `onet.pt`, converted from the
authors' Caffe models). The layers, their names and the order of the flattened features
(`permute(0, 3, 2, 1)`: Caffe's) are the port's, so its state dicts load key for key.

Why not import them from facenet-pytorch: its `models.mtcnn` imports `torchvision`, whose
import pulls in `torch._dynamo` (2-3 s of a run's start on a 2-core machine, more than torch
itself). These classes import only torch; tests/test_mtcnn.py checks them against the port.

Outputs: P-net `(reg [B, 4, h, w], prob [B, 2, h, w])` (a fully convolutional 12 px window,
stride 2); R-net `(reg [N, 4], prob [N, 2])` on 24x24 crops; O-net `(reg [N, 4], landmarks
[N, 10] (x0..x4, y0..y4 in box units), prob [N, 2])` on 48x48 crops. Inputs are RGB scaled to
(x - 127.5) / 128.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, kernel_size=3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, kernel_size=3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, kernel_size=3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):  # [B, 3, H, W] -> reg [B, 4, h, w], prob [B, 2, h, w]
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, kernel_size=3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, kernel_size=3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, kernel_size=2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):  # [N, 3, 24, 24] -> reg [N, 4], prob [N, 2]
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()  # Caffe's feature order
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, kernel_size=3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, kernel_size=3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, kernel_size=3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, kernel_size=2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):  # [N, 3, 48, 48] -> reg [N, 4], landmarks [N, 10], prob [N, 2]
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def weights_folder() -> Path:
    """facenet-pytorch's `data/` folder, found without importing the package (which imports torchvision)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("facenet-pytorch is not installed: pip install 'facenet-pytorch>=2.5.3,!=2.6.0' (MTCNN's weights ship in it)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_mtcnn(device: torch.device | str = "cpu") -> tuple[PNet, RNet, ONet]:
    """The three networks with facenet-pytorch's weights, every key and shape checked; eval mode."""
    nets = []
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        state = torch.load(weights_folder() / f"{name}.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        nets.append(net.eval().requires_grad_(False).to(device))
    return tuple(nets)  # type: ignore[return-value]
