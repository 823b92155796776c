"""Feature networks for FID and FD-DINOv2: the StyleGAN/EDM Inception TorchScript detector, one of our feature nets,
or a TorchScript DINOv2 ViT-L/14 with EDM2's preprocessing (`DINOv2FeatureNet`)."""
from __future__ import annotations

import os
import warnings

import torch

from full.errors import SidError

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
# NVlabs/edm2 calculate_metrics.py, DINOv2Detector (after layer6ai-labs/dgm-eval): bicubic antialiased resize to
# 224x224, then ImageNet's normalisation; ViT-L/14 gives 1024-d features.
DINOV2_RESOLUTION = 224
DINOV2_MEAN = (0.485, 0.456, 0.406)
DINOV2_STD = (0.229, 0.224, 0.225)
DINOV2_EXPORT = ("python -c \"import torch; m = torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14').eval(); "
                 "torch.jit.save(torch.jit.trace(m, torch.zeros(1, 3, 224, 224)), 'dinov2-vitl14.pt')\"")


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


def load_torchscript(path, device) -> torch.jit.ScriptModule:
    """A TorchScript network in eval mode (torch.jit's deprecation warning silenced: the published detectors are
    TorchScript); torch raises RuntimeError, ValueError or AttributeError for other files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()


def load_detector(location: str | os.PathLike, device: str | torch.device = "cpu", *,
                  what: str = "--detector") -> FeatureNet:
    """A TorchScript Inception-style detector (.pt), or our NAME.safetensors + NAME.json feature net; a path or
    URL either way (`full.store.resolve.locate`). ``what`` names the option in messages."""
    from full.store.resolve import PAIR, TORCHSCRIPT, locate
    device = torch.device(device)
    location = os.fspath(location)
    if location.split("?")[0].endswith(".pkl"):
        raise MetricsError(f"{what} {location} is a pickle, which would run code to load; use the TorchScript form "
                           f"of the Inception detector instead: {INCEPTION_URL}")
    found = locate(location, what, kinds=(TORCHSCRIPT, PAIR))
    name = os.path.basename(location.split("?")[0]).removesuffix(".json").removesuffix(".safetensors")
    if found.kind == PAIR:
        from full.mnist_classifier import load_classifier
        net = load_classifier(found.path, found.weights).to(device)
        return FeatureNet(net, net.channels, True, name, device)
    try:
        net = load_torchscript(found.path, device)
        arguments = {a.name for a in net.forward.schema.arguments}
    except (RuntimeError, ValueError, AttributeError) as error:
        raise MetricsError(f"{what} {location} is not a TorchScript detector ({str(error).splitlines()[0]})") from None
    if "return_features" not in arguments:
        raise MetricsError(f"{what} {location} has no return_features argument; it is not an Inception-style detector")
    return FeatureNet(net, 3, "no_output_bias" in arguments, name, device)


def dinov2_preprocess(images: torch.Tensor) -> torch.Tensor:
    """EDM2's DINOv2 input from uint8 NCHW RGB images: float32, bicubic antialiased resize to 224x224 (EDM2's
    ``resize_mode='torch'``), / 255, minus ImageNet's mean, over ImageNet's std, per channel."""
    x = torch.nn.functional.interpolate(images.to(torch.float32), size=(DINOV2_RESOLUTION, DINOV2_RESOLUTION),
                                        mode="bicubic", antialias=True)
    x = x / 255
    mean = torch.tensor(DINOV2_MEAN, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
    std = torch.tensor(DINOV2_STD, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
    return (x - mean) / std


class DINOv2FeatureNet(FeatureNet):
    """A TorchScript DINOv2 (ViT-L/14 for FD-DINOv2: float [N, 3, 224, 224] normalised images -> [N, 1024]
    features) behind the detector interface: uint8 NCHW images in, EDM2's preprocessing (`dinov2_preprocess`)
    applied here, gray repeated to RGB. No class probabilities."""

    def __init__(self, net, name: str, device: torch.device):
        super().__init__(net, 3, False, name, device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(dinov2_preprocess(self._prepare(images))).double().cpu()

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        raise MetricsError(f"{self.name} is a DINOv2 feature network; it gives no class probabilities")


def load_dinov2(location: str | os.PathLike, device: str | torch.device = "cpu", *,
                what: str = "--detector-dinov2") -> DINOv2FeatureNet:
    """The DINOv2 feature network of FD-DINOv2 from a TorchScript file (path or URL), never from pickled code;
    `DINOV2_EXPORT` is the one-line command that exports it once from torch hub."""
    from full.store.resolve import TORCHSCRIPT, locate
    device = torch.device(device)
    location = os.fspath(location)
    if location.split("?")[0].endswith((".pkl", ".pth")):
        raise MetricsError(f"{what} {location} is not TorchScript; export the DINOv2 ViT-L/14 once as TorchScript: "
                           f"{DINOV2_EXPORT}")
    found = locate(location, what, kinds=(TORCHSCRIPT,))
    try:
        net = load_torchscript(found.path, device)
    except (RuntimeError, ValueError, AttributeError) as error:
        raise MetricsError(f"{what} {location} is not a TorchScript file ({str(error).splitlines()[0]}); export "
                           f"the DINOv2 ViT-L/14 as TorchScript: {DINOV2_EXPORT}") from None
    return DINOv2FeatureNet(net, os.path.basename(location.split("?")[0]).removesuffix(".pt"), device)
