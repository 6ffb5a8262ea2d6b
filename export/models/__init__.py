"""Torch networks: the temporal U-Net denoiser and small MLPs (ranker heads, aux models)."""
