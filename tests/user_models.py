"""Small user-defined modules for `edgevit compile pkg.module:attr` tests (the 'user's package')."""
import torch
from torch import nn


class TinyConvNet(nn.Module):
    """A 10-class conv net, big enough for int8 to be meaningful, small enough to compile in seconds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x))


def build_tiny() -> nn.Module:
    return TinyConvNet()


class DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.export cannot capture this at a static shape."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), Gate())

    def forward(self, x):
        return self.body(x)


class Gate(nn.Module):
    def forward(self, x):
        if x.mean().item() > 0:  # data-dependent branch
            return x.relu()
        return x


def build_data_dependent() -> nn.Module:
    return DataDependent()


def build_not_a_module():
    return 42


class PartlyOutside(nn.Module):
    """Ops XNNPACK's partitioner leaves to portable kernels: cumsum (no config), LayerNorm (no config) and a
    mean over tokens (its mean config wants 4-D, last two dims, keepdim): 3 ops outside, 4 delegate calls."""

    def __init__(self, c: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.b = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(c)
        self.fc = nn.Linear(c, c)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = torch.cumsum(torch.relu(self.a(x)), dim=1)
        x = self.b(x).flatten(2).transpose(1, 2)
        x = x + self.fc(self.norm(x))
        return self.head(x.mean(1))


def build_partly_outside() -> nn.Module:
    return PartlyOutside()
