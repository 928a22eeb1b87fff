import sys

from selectray.cli import main

sys.exit(main())
