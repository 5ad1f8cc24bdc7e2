# Sourced by the bench scripts on a GPU machine with no package index: install every
# carried wheel (.whl/, .whl-min/, .whl-peers/ — whichever this call carried) into
# /tmp/site and put it on PYTHONPATH. One version of each package, or pip stops.
shopt -s nullglob
wheels=(.whl*/*.whl)
shopt -u nullglob
if [ ${#wheels[@]} -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${wheels[@]}" && export PYTHONPATH=/tmp/site
fi
