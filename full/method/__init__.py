"""The method: SiD's losses (shared with `toy`), the trainer's f_psi and G steps, the EMA, augmentation and presets."""
