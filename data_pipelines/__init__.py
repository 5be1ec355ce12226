"""Data for the chest X-ray classifiers: sources, splits, tf.data pipelines, augmentation.

from data_pipelines import load_dataset, make_dataset
data = load_dataset("../shared/data/chest_xray_224")
print(data.summary())
train = make_dataset(data.splits["train"], image_size=(224, 224), batch_size=32,
                     training=True, augment="standard", num_classes=2)
"""

from data_pipelines.augment import AUGMENT_LEVELS, AugmentConfig
from data_pipelines.class_weights import balanced_class_weights, class_counts
from data_pipelines.data import ImageData, Split
from data_pipelines.errors import DataError
from data_pipelines.identity import content_hashes, overlap
from data_pipelines.manifest import ManifestOptions
from data_pipelines.pipeline import make_dataset
from data_pipelines.preview import augment_preview
from data_pipelines.sources import load_dataset
from data_pipelines.splits import counts_table, kfold_splits, patient_id

__all__ = [
    "AUGMENT_LEVELS",
    "AugmentConfig",
    "DataError",
    "ImageData",
    "ManifestOptions",
    "Split",
    "augment_preview",
    "balanced_class_weights",
    "class_counts",
    "content_hashes",
    "counts_table",
    "kfold_splits",
    "load_dataset",
    "make_dataset",
    "overlap",
    "patient_id",
]
