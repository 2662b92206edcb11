"""Input data for calibration and verification: image folders and the built-in synthetic fallback."""
from .images import (CalibrationSet, Preprocess, find_images, load_image_folder, synthetic_images)

__all__ = ["CalibrationSet", "Preprocess", "find_images", "load_image_folder", "synthetic_images"]
