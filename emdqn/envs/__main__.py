"""``python -m emdqn.envs``: the environments this machine can train, by family."""

import sys

from emdqn.config.choices import MINATAR_GAMES
from emdqn.envs.make import available_envs

if sys.argv[1:]:
    print("python -m emdqn.envs: the environments this machine can train, by family, and the config that "
          "plays each (no arguments)", file=sys.stderr if sys.argv[1] not in ("-h", "--help") else sys.stdout)
    sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
for family, ids in available_envs().items():
    print(f"{family}: {len(ids)}")
    print("    " + ", ".join(ids))
print(f"MinAtar games: {', '.join(MINATAR_GAMES)}; ALE/<Game>-v5 ids work too (with our frame skip)")
