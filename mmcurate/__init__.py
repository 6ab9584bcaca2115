"""mmcurate: curate multimodal WebDataset shards. Annotate once, decide cheaply, re-shard.

Python API::

    import mmcurate
    result = mmcurate.curate("data/{000000..000009}.tar", "default", "curated/")
    run = mmcurate.open_run("curated/")
    run.decisions.to_pandas()
    wds.WebDataset(urls).compose(mmcurate.select(run="curated/"))  # inside a training loop

Every run also writes ``curated/report.html``; see ``docs/api.md`` and the notebooks in ``docs/``.
"""

from .curate import CurateResult, curate
from .recipe import Recipe, RecipeError
from .store.runview import Run, open_run
from .views.stream import select

__all__ = ["CurateResult", "Recipe", "RecipeError", "Run", "curate", "open_run", "select"]
__version__ = "0.1.0"
