"""Synthetic B-mode breast-ultrasound phantoms with known ground truth."""
