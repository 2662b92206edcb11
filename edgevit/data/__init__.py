"""Input data: image folders (calibration, labelled evaluation sets), the synthetic fallback, small
offline data sets for training and measuring accuracy."""
from .datasets import FASHION_MNIST_CLASSES, digits, fashion_mnist, shapes, split_indices, write_labelled_folder
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
           "load_labelled_folder", "synthetic_images", "digits", "fashion_mnist", "FASHION_MNIST_CLASSES", "shapes",
           "split_indices", "write_labelled_folder"]
