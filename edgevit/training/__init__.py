"""Training small classifiers here: the fp32 models the accuracy benchmark and tests quantize, and the
loop QAT fine-tunes with."""
from .loop import augment_shift, evaluate_logits, topk_accuracy, train_classifier

__all__ = ["train_classifier", "evaluate_logits", "topk_accuracy", "augment_shift"]
