"""Real safety data sets: loaders normalised to one schema, seeded de-duplicated splits, and
the conversion to the pipeline's eval records. Not yet wired into the Snakemake DAG."""
from .loaders import FIELDS, LOADERS, DataError, DatasetLoader, get_loader, load_dataset_records, register_loader
from .splits import (DATA_SCHEMA, DataSplits, check_data_config, load_splits, make_splits, normalise_text,
                     to_eval_records)

__all__ = ["FIELDS", "LOADERS", "DataError", "DatasetLoader", "get_loader", "load_dataset_records",
           "register_loader", "DATA_SCHEMA", "DataSplits", "check_data_config", "load_splits", "make_splits",
           "normalise_text", "to_eval_records"]
