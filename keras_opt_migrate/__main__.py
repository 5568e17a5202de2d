"""`python -m keras_opt_migrate` runs the command-line interface."""

import sys

from .cli import main

sys.exit(main())
