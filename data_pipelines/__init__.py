"""The data: collection into RLDS datasets (TFDS, array_record) and windowed training batches.

    from data_pipelines import open_dataset, WindowLoader, WindowConfig
    ds = open_dataset("runs/data", expect={"height": 64, "width": 64, "cameras": ["front"], "action_dim": 5})
    loader = WindowLoader(ds, "train", WindowConfig(batch_size=32, window=16), seed=0)

Modules: behaviour (the behaviour policy), rlds (schema + TFDS builder), collect (simulate -> publish),
publish (write, verify, atomic rename), dataset (open, verify, read), loader (windows), card, synthetic.
"""

from data_pipelines.dataset import Dataset, DatasetError, open_dataset
from data_pipelines.loader import LoaderState, WindowConfig, WindowLoader

__all__ = ["Dataset", "DatasetError", "LoaderState", "WindowConfig", "WindowLoader", "open_dataset"]
