"""Feature networks for FID: the StyleGAN/EDM Inception TorchScript detector, or one of our feature nets."""
from __future__ import annotations

import os
import warnings

import torch

from full.errors import SidError
from full.store.download import fetch, is_url

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


class MetricsError(SidError, ValueError):
    """A detector, statistics file or image source that cannot be used."""


class FeatureNet:
    """A feature network with the StyleGAN/EDM Inception detector interface, on one device.

    The wrapped `net` takes uint8 NCHW images (0..255): ``net(x, return_features=True)`` gives [N, D] features
    and, when it accepts ``no_output_bias``, ``net(x, no_output_bias=True)`` gives [N, K] class probabilities
    (softmax without the output bias, as in the original Inception Score code). Gray images are repeated
    to 3 channels for 3-channel nets.
    """

    def __init__(self, net, channels: int, has_probs: bool, name: str, device: torch.device):
        self.net, self.channels, self.has_probs, self.name, self.device = net, channels, has_probs, name, device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise MetricsError(f"detectors take uint8 NCHW images, got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1 and self.channels == 3:
            images = images.repeat(1, 3, 1, 1)
        if images.shape[1] != self.channels:
            raise MetricsError(f"{self.name} takes {self.channels}-channel images, got {images.shape[1]} channels")
        return images.to(self.device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare(images), return_features=True).double().cpu()

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare(images), no_output_bias=True).double().cpu()


def load_detector(location: str, device: str | torch.device = "cpu") -> FeatureNet:
    """A TorchScript Inception-style detector (.pt, path or URL), or our NAME.safetensors + NAME.json feature net."""
    device = torch.device(device)
    stem = location.removesuffix(".safetensors").removesuffix(".json")
    if location.endswith(".pkl"):
        raise MetricsError(f"{location} is a pickle, which would run code to load; use the TorchScript form of the "
                           f"Inception detector instead: {INCEPTION_URL}")
    if location.endswith((".json", ".safetensors")) or not is_url(location) and fetch(stem + ".json").is_file():
        from full.mnist_classifier import load_classifier
        net = load_classifier(fetch(stem + ".json"), fetch(stem + ".safetensors")).to(device)
        return FeatureNet(net, net.channels, True, os.path.basename(stem), device)
    path = fetch(location)
    if not path.is_file():
        raise MetricsError(f"detector not found: {location}; pass the Inception TorchScript ({INCEPTION_URL}) "
                           f"or a feature net NAME.safetensors + NAME.json")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the published detector is TorchScript
            net = torch.jit.load(str(path), map_location=device).eval()
        arguments = {a.name for a in net.forward.schema.arguments}
    except (RuntimeError, ValueError, AttributeError) as error:
        raise MetricsError(f"{location} is not a TorchScript detector ({str(error).splitlines()[0]})") from None
    if "return_features" not in arguments:
        raise MetricsError(f"{location} has no return_features argument; it is not an Inception-style detector")
    return FeatureNet(net, 3, "no_output_bias" in arguments, path.name, device)
