import sys

from netmem_probe.cli import main

if __name__ == "__main__":
    sys.exit(main())
