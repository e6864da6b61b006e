import sys

from earthmapper_jax.cli import main

sys.exit(main())
