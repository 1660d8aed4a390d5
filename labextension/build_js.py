"""The build hook's function: hatch-jupyter-builder's npm builder, when there is JavaScript to build.

Until `package.json` exists (the server part can be installed and tested on its own), there is
nothing to build and the wheel carries no frontend. Once it exists, the npm builder runs
`jlpm install` and `jlpm build:prod`, and the built extension must be where the wheel takes it from.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hatch_jupyter_builder import npm_builder

HERE = Path(__file__).parent
BUILT = HERE / "grader_labextension" / "labextension" / "package.json"


def build_if_present(target_name: str, version: str, **kwargs: object) -> None:
    if not (HERE / "package.json").exists():
        logging.getLogger(__name__).warning(
            "No package.json: building grader-labextension without its frontend"
        )
        return
    npm_builder(target_name, version, path=str(HERE), **kwargs)
    if version == "standard" and not BUILT.exists():
        raise RuntimeError(f"The frontend build did not produce {BUILT}")
