"""Input data: image folders (calibration, labelled evaluation sets), the synthetic fallback, small
offline data sets for training and measuring accuracy."""
from .datasets import digits, shapes, split_indices, write_labelled_folder
from .images import (
                     CalibrationSet,
                     LabelledSet,
                     Preprocess,
                     find_images,
                     load_image_folder,
                     load_labelled_folder,
                     synthetic_images,
)

__all__ = ["CalibrationSet", "LabelledSet", "Preprocess", "find_images", "load_image_folder",
           "load_labelled_folder", "synthetic_images", "digits", "shapes", "split_indices", "write_labelled_folder"]
