import sys

from popgate.gateway.cli.main import main

sys.exit(main())
