"""``python -m hybrid_search.app.cli``: the same as the ``hybrid-search`` command."""

import sys

from hybrid_search.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
