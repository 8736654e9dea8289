"""Where nginx finds its main config file, resolved the way ``nginx -p PREFIX -c CONF`` resolves it.

nginx (``ngx_process_options`` in ``src/core/nginx.c``) makes a relative
``-c`` path full against the prefix (``-p``), not against the directory it
was started from; the main file's directory then becomes the *conf prefix*,
against which relative ``include`` paths are resolved
(:mod:`nginx_canary.nginx.conf`). Without ``-p`` nginx would use its
compiled-in prefix; nginx-canary always hands nginx an absolute ``-c``, so a
relative path given without a prefix is taken from the current directory,
like any path typed on a command line.
"""

from __future__ import annotations

import os
from typing import Optional


def main_conf_path(conf: str, prefix: Optional[str], cwd: Optional[str] = None) -> str:
    """The absolute path of the main config file nginx reads with ``-p prefix -c conf``.

    ``cwd`` (default: the current directory) anchors a relative ``prefix``,
    and a relative ``conf`` when there is no prefix. Raises nothing.
    """
    base = cwd if cwd is not None else os.getcwd()
    if os.path.isabs(conf):
        return os.path.normpath(conf)
    if prefix:
        return os.path.normpath(os.path.join(base, prefix, conf))
    return os.path.normpath(os.path.join(base, conf))
