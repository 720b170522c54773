"""`python -m supervisors`: the operations command line (supervisors/observe/_cli.py).

Also installed as the `inorder` console script; `--help` lists the commands and
the exit codes.
"""

from supervisors.observe._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
