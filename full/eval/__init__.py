"""Evaluation: the EDM sampler, images, and FID/IS/precision-recall."""
