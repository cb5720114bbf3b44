import sys

from netmem_probe.cli import main

sys.exit(main())
