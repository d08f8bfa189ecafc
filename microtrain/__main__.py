import sys

from microtrain.cli import main

sys.exit(main())
