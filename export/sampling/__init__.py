"""Torch reference samplers (one unit per method) and the shared sampling math."""
