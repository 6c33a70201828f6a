import sys

from fusionkit.cli import main

sys.exit(main())
