"""``python -m openenv_gym`` is the ``openenv-gym`` command."""

from openenv_gym.cli import main

raise SystemExit(main())
