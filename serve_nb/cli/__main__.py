"""``python -m serve_nb.cli``: the ``serve_nb`` command without its console script."""

import sys

from serve_nb.cli.main import main

sys.exit(main())
