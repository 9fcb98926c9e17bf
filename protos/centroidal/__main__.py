"""`python -m centroidal`: the `centroidal` command."""

import sys

from centroidal.client.cli import main

sys.exit(main())
