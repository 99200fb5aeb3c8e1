"""Checks of the source tree's structure, run by `make lint`: `python -m tools.check_imports`
(no import cycle between first-party modules) and `python -m tools.check_functions` (no
function over 80 lines). Standard library only, read through `ast`: nothing here imports the
code it checks, so neither torch nor a GPU library is needed."""
