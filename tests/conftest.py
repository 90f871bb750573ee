import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than a minute on a 2-core CPU')
    config.addinivalue_line('markers', 'gpu: needs a CUDA device')

def pytest_collection_modifyitems(config, items):
    import torch
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for it in items:
        if 'gpu' in it.keywords and not torch.cuda.is_available(): it.add_marker(skip)

@pytest.fixture
def reports(tmp_path, monkeypatch):
    "A private reports/ root for a test."
    monkeypatch.setenv('FORESIGHT_REPORTS', str(tmp_path/'reports'))
    return tmp_path/'reports'
