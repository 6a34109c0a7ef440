import sys

from pvlens.cli import main

sys.exit(main())
