"""``python -m ollama_nb.cli``: the same as the ``ollama-nb`` command."""

import sys

from . import main

sys.exit(main())
