"""A tiny randomly initialised diffusers VAE, saved like a real one (AutoencoderKL.save_pretrained), for the
latent-space tests: one level (no downsampling), 4 latent channels, RGB in and out. Nothing is downloaded."""
import torch


def save_tiny_vae(path, seed: int = 0) -> str:
    from diffusers import AutoencoderKL
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, sample_size=16, norm_num_groups=4,
                        layers_per_block=1)
    vae.save_pretrained(str(path))
    return str(path)
