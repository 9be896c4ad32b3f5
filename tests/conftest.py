import os

import torch
from hypothesis import settings

# CI has 2 cores; keep torch from oversubscribing them when pytest-xdist is not used.
torch.set_num_threads(min(2, os.cpu_count() or 1))

settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci")
