"""``python -m video_aesthetics`` is the CLI."""

import sys

from video_aesthetics.cli import main

sys.exit(main())
