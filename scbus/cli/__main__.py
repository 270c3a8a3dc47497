"""C{python -m scbus.cli}: the C{scbus} command."""

import sys

from .main import main

sys.exit(main())
